"""LSTM forecaster: the torch module (``module``) and the fit/predict wrapper (``model``)."""

from ml.lstm.model import LSTMConfig, LSTMForecaster

__all__ = ["LSTMConfig", "LSTMForecaster"]
