"""LSTM forecaster wrapper: data windows, scaling, training, conformal intervals, artifacts.

* Inputs are windows of log returns (never raw prices), each series scaled by the standard
  deviation of its own recent returns, so one network can serve assets of any price level
  and volatility (a *global* model, darts/N-BEATS style) or a single asset.
* Training: masked MSE on the next ``max_horizon`` scaled returns (direct multi-horizon
  head), Adam, early stopping on a time-ordered validation split (the last part of every
  series; training targets never reach into it), best weights restored, a wall-clock budget.
* Determinism: seeded numpy/torch generators; CPU by default, CUDA when present, and a CUDA
  out-of-memory error falls back to CPU.
* Intervals: split-conformal quantiles of the absolute validation residuals of the cumulative
  log return at every step (in scaled units, so they transfer across series).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Self

import numpy as np
import torch

from ml.base import (
    DEFAULT_LEVEL,
    Forecast,
    GlobalForecaster,
    NotFittedError,
    as_price_series,
    check_horizon,
)
from ml.lstm.network import ReturnsLSTM

log = logging.getLogger(__name__)

LEVEL_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)
ARTIFACT_FORMAT = 1


@dataclass(frozen=True)
class LSTMConfig:
    window: int = 32
    hidden: int = 32
    layers: int = 1
    max_horizon: int = 24
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 4
    val_fraction: float = 0.2
    min_val_points: int = 20
    max_windows_per_epoch: int = 60_000
    min_steps_per_epoch: int = 40
    max_val_windows: int = 20_000
    max_train_seconds: float = 300.0
    scale_lookback: int = 250
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # Measured on the 2-core box: one LSTM step (batch 256, window 32, hidden 32) takes
    # 13 ms with 1 thread and 75 ms with 2 (contention); small recurrent matmuls do not
    # parallelise, so the default is one intra-op thread (run processes in parallel instead).
    num_threads: int | None = 1


@dataclass
class _Windows:
    """Lazy windows over one flat array of scaled returns (series separated by NaN pads)."""

    returns: np.ndarray  # float32, NaN padding after every series
    starts: np.ndarray  # index of the first input of each window
    limits: np.ndarray  # number of usable targets of each window (<= horizon)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def batch(self, idx: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, ...]:
        starts = self.starts[idx]
        x = self.returns[starts[:, None] + np.arange(window)]
        y = self.returns[starts[:, None] + window + np.arange(horizon)]
        mask = (np.arange(horizon)[None, :] < self.limits[idx][:, None]) & np.isfinite(y)
        return x, np.nan_to_num(y), mask


@dataclass
class _Prepared:
    train: _Windows
    val: _Windows
    n_series: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_threads(num_threads: int | None) -> None:
    """Set torch's intra-op threads (``None``: every core this process may use)."""
    threads = num_threads or max(1, min(len(os.sched_getaffinity(0)), os.cpu_count() or 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def series_scale(returns: np.ndarray, lookback: int) -> float:
    tail = returns[-lookback:]
    scale = float(np.std(tail)) if tail.size >= 2 else 0.0
    return scale if scale > 1e-12 else 1.0


def _copy_state(net: ReturnsLSTM) -> dict[str, torch.Tensor]:
    """A detached copy of the network's weights (the best epoch's, restored at the end)."""
    return {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}


class LSTMForecaster(GlobalForecaster):
    """LSTM on windows of scaled log returns; fit one series (``fit``) or many (``fit_many``)."""

    name: ClassVar[str] = "lstm"

    def __init__(self, config: LSTMConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or LSTMConfig()
        self.config = replace(cfg, **overrides) if overrides else cfg
        self.net: ReturnsLSTM | None = None
        self.conformal: np.ndarray | None = None  # (max_horizon, len(LEVEL_GRID)) scaled
        self.training: dict[str, Any] = {}
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------------- data
    def _prepare(self, series: Sequence[np.ndarray]) -> _Prepared:
        config = self.config
        chunks: list[np.ndarray] = []
        train_starts: list[np.ndarray] = []
        train_limits: list[np.ndarray] = []
        val_starts: list[np.ndarray] = []
        val_limits: list[np.ndarray] = []
        offset = 0
        used = 0
        for prices in series:
            returns = np.diff(np.log(as_price_series(prices, min_len=2)))
            n_returns = returns.size
            n_val = max(int(n_returns * config.val_fraction), config.min_val_points)
            split = n_returns - n_val  # first validation target index
            if split - config.window < 4 or n_val < 2:
                continue  # too short to contribute training and validation windows
            scale = series_scale(returns[:split], config.scale_lookback)
            padding = np.full(config.max_horizon, np.nan)
            chunks.append(np.r_[returns / scale, padding].astype(np.float32))
            first_targets = np.arange(config.window, n_returns)  # of each window
            is_val = first_targets >= split
            train_first, val_first = first_targets[~is_val], first_targets[is_val]
            train_starts.append(offset + train_first - config.window)
            train_limits.append(np.minimum(config.max_horizon, split - train_first))
            val_starts.append(offset + val_first - config.window)
            val_limits.append(np.minimum(config.max_horizon, n_returns - val_first))
            offset += n_returns + config.max_horizon
            used += 1
        if not used:
            raise ValueError(
                f"no series long enough for window={config.window} and a validation split"
            )
        flat = np.concatenate(chunks)
        return _Prepared(
            train=_Windows(flat, np.concatenate(train_starts), np.concatenate(train_limits)),
            val=_Windows(flat, np.concatenate(val_starts), np.concatenate(val_limits)),
            n_series=used,
        )

    # ---------------------------------------------------------------------- training
    def fit(self, y: np.ndarray) -> Self:
        arr = as_price_series(y, min_len=2)
        self.fit_many([arr])
        self._y = arr
        return self

    def fit_many(self, series: Sequence[np.ndarray]) -> Self:
        """Train one network on every series in ``series`` (a global model)."""
        configure_threads(self.config.num_threads)
        data = self._prepare(series)
        device = resolve_device(self.config.device)
        try:
            self._train(data, device)
        except torch.cuda.OutOfMemoryError:
            log.warning("CUDA out of memory while training the LSTM; retrying on CPU")
            torch.cuda.empty_cache()
            self._train(data, torch.device("cpu"))
        self._calibrate(data.val)
        self._y = None
        return self

    def _loss(
        self, net: ReturnsLSTM, windows: _Windows, idx: np.ndarray, device: torch.device
    ) -> torch.Tensor:
        x, y, mask = windows.batch(idx, self.config.window, self.config.max_horizon)
        inputs = torch.from_numpy(x).unsqueeze(-1).to(device)
        targets = torch.from_numpy(y).to(device)
        weights = torch.from_numpy(mask.astype(np.float32)).to(device)
        pred = net(inputs)
        return ((pred - targets) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)

    def _epoch_indices(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """A shuffled epoch, capped for big data and repeated for small data."""
        config = self.config
        want = min(
            max(count, config.min_steps_per_epoch * config.batch_size),
            config.max_windows_per_epoch,
        )
        reps = -(-want // count)
        return np.concatenate([rng.permutation(count) for _ in range(reps)])[:want]

    def _train(self, data: _Prepared, device: torch.device) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        net = ReturnsLSTM(config.hidden, config.layers, config.max_horizon).to(device)
        optimizer = torch.optim.Adam(
            net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        val_idx = np.arange(len(data.val))
        if val_idx.size > config.max_val_windows:
            val_idx = np.sort(rng.choice(val_idx, config.max_val_windows, replace=False))
        best = math.inf
        best_state = _copy_state(net)
        stale = 0
        epochs_run = 0
        started = time.perf_counter()
        history: list[float] = []
        for _epoch in range(config.epochs):
            net.train()
            perm = self._epoch_indices(len(data.train), rng)
            for start in range(0, perm.size, config.batch_size):
                optimizer.zero_grad(set_to_none=True)
                batch = perm[start : start + config.batch_size]
                loss = self._loss(net, data.train, batch, device)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
            net.eval()
            with torch.no_grad():
                vals = [
                    float(self._loss(net, data.val, val_idx[start : start + 4096], device))
                    * min(4096, val_idx.size - start)
                    for start in range(0, val_idx.size, 4096)
                ]
            val_loss = sum(vals) / max(val_idx.size, 1)
            history.append(round(val_loss, 5))
            epochs_run += 1
            if val_loss < best - 1e-5:
                best, stale = val_loss, 0
                best_state = _copy_state(net)
            else:
                stale += 1
                if stale >= config.patience:
                    break
            if time.perf_counter() - started > config.max_train_seconds:
                log.info("LSTM training budget %.0fs reached", config.max_train_seconds)
                break
        net.load_state_dict(best_state)
        self.net = net.to("cpu").eval()
        self.device = device
        self.training = {
            "epochs": epochs_run,
            "best_val_loss": round(best, 6),
            "val_loss_history": history,
            "train_windows": len(data.train),
            "val_windows": len(data.val),
            "series": data.n_series,
            "seconds": round(time.perf_counter() - started, 2),
            "device": str(device),
        }
        self.info.details = dict(self.training)

    def _calibrate(self, val: _Windows) -> None:
        """Conformal quantiles of |cumulative residual| per step, on the validation windows."""
        config = self.config
        idx = np.arange(len(val))[: config.max_val_windows]
        x, y, mask = val.batch(idx, config.window, config.max_horizon)
        pred = self._net_predict(x)
        cum_err = np.abs(np.cumsum(pred, axis=1) - np.cumsum(y, axis=1))
        table = np.zeros((config.max_horizon, LEVEL_GRID.size))
        last_ok = -1
        for step in range(config.max_horizon):
            residuals = cum_err[mask[:, step], step]
            if residuals.size >= 10:
                count = residuals.size
                q_levels = np.minimum(np.ceil((count + 1) * LEVEL_GRID) / count, 1.0)
                table[step] = np.quantile(residuals, q_levels, method="higher")
                last_ok = step
            elif last_ok >= 0:  # too few residuals this far out: random-walk growth
                table[step] = table[last_ok] * math.sqrt((step + 1) / (last_ok + 1))
            else:
                noise = np.abs(np.random.default_rng(0).standard_normal(1))
                table[step] = np.sqrt(step + 1) * noise
        self.conformal = np.maximum.accumulate(table, axis=1)

    # --------------------------------------------------------------------- inference
    def _net_predict(self, x: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise NotFittedError("lstm: call fit() first")
        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).unsqueeze(-1))
        return out.numpy().astype(np.float64)

    def _inputs(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        window = self.config.window
        inputs = np.zeros((len(histories), window), dtype=np.float32)
        scales = np.ones(len(histories))
        for row, history in enumerate(histories):
            returns = np.diff(np.log(as_price_series(history)))
            scale = series_scale(returns, self.config.scale_lookback)
            tail = returns[-window:] / scale
            if tail.size:
                inputs[row, -tail.size :] = tail
            scales[row] = scale
        return inputs, scales

    def forward_many(
        self, histories: Sequence[np.ndarray], h: int, level: float = DEFAULT_LEVEL
    ) -> list[Forecast]:
        """Batched :meth:`forward`: one network call for every history."""
        check_horizon(h)
        if h > self.config.max_horizon:
            raise ValueError(f"horizon {h} > lstm max horizon {self.config.max_horizon}")
        if self.conformal is None:
            raise NotFittedError("lstm: call fit() first")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if not histories:
            return []
        inputs, scales = self._inputs(histories)
        cum = np.cumsum(self._net_predict(inputs)[:, :h], axis=1) * scales[:, None]
        quantiles = np.array(
            [np.interp(level, LEVEL_GRID, self.conformal[step]) for step in range(h)]
        )
        half = quantiles[None, :] * scales[:, None]
        out: list[Forecast] = []
        for row, history in enumerate(histories):
            last = float(history[-1])
            out.append(
                Forecast(
                    mean=last * np.exp(cum[row]),
                    lower=last * np.exp(cum[row] - half[row]),
                    upper=last * np.exp(cum[row] + half[row]),
                    level=level,
                )
            )
        return out

    @property
    def max_horizon(self) -> int:
        return self.config.max_horizon

    # --------------------------------------------------------------------- artifacts
    def to_bytes(self) -> bytes:
        if self.net is None or self.conformal is None:
            raise NotFittedError("lstm: nothing to serialize before fit()")
        keep = self.config.scale_lookback + 1
        payload = {
            "format": ARTIFACT_FORMAT,
            "config": json.dumps(asdict(self.config)),
            "training": json.dumps(self.training),
            "state": self.net.state_dict(),
            "conformal": torch.from_numpy(self.conformal),
            "y_tail": torch.from_numpy(self._y[-keep:] if self._y is not None else np.zeros(0)),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        # weights_only=True: tensors and plain containers only, never arbitrary code.
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad bytes
            raise ValueError(f"not an lstm artifact: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError("not an lstm artifact (unknown format)")
        config = LSTMConfig(**json.loads(payload["config"]))
        model = cls(config)
        net = ReturnsLSTM(config.hidden, config.layers, config.max_horizon)
        net.load_state_dict(payload["state"])
        model.net = net.eval()
        model.conformal = payload["conformal"].numpy().astype(np.float64)
        model.training = json.loads(payload["training"])
        tail = payload["y_tail"].numpy().astype(np.float64)
        model._y = tail if tail.size else None
        return model
