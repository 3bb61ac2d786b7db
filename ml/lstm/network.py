"""The torch ``nn.Module`` only: a window of scaled log returns -> the next ``horizon`` ones."""

from __future__ import annotations

import torch
from torch import nn


class ReturnsLSTM(nn.Module):
    """One-feature LSTM encoder with a direct multi-horizon linear head.

    Input ``(batch, window, 1)`` scaled log returns; output ``(batch, horizon)`` scaled log
    returns for steps 1..horizon (direct strategy: no error feedback between steps).
    """

    def __init__(self, hidden: int = 32, layers: int = 1, horizon: int = 24) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])
