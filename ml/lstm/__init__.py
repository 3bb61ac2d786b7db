"""LSTM forecaster: the torch network (``network``) and the forecaster that trains and serves
it (``forecaster``: windows, scaling, training, conformal intervals, artifacts)."""

from ml.lstm.forecaster import LSTMConfig, LSTMForecaster

__all__ = ["LSTMConfig", "LSTMForecaster"]
