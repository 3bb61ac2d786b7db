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
from ml.lstm.module import ReturnsLSTM

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
        s = self.starts[idx]
        x = self.returns[s[:, None] + np.arange(window)]
        y = self.returns[s[:, None] + window + np.arange(horizon)]
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
    n = num_threads or max(1, min(len(os.sched_getaffinity(0)), os.cpu_count() or 1))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def series_scale(returns: np.ndarray, lookback: int) -> float:
    tail = returns[-lookback:]
    s = float(np.std(tail)) if tail.size >= 2 else 0.0
    return s if s > 1e-12 else 1.0


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
        c = self.config
        chunks: list[np.ndarray] = []
        tr_starts: list[np.ndarray] = []
        tr_limits: list[np.ndarray] = []
        va_starts: list[np.ndarray] = []
        va_limits: list[np.ndarray] = []
        offset = 0
        used = 0
        for y in series:
            arr = as_price_series(y, min_len=2)
            r = np.diff(np.log(arr))
            n = r.size
            n_val = max(int(n * c.val_fraction), c.min_val_points)
            split = n - n_val  # first validation target index
            if split - c.window < 4 or n_val < 2:
                continue  # too short to contribute training and validation windows
            scale = series_scale(r[:split], c.scale_lookback)
            chunks.append(np.r_[r / scale, np.full(c.max_horizon, np.nan)].astype(np.float32))
            t0 = np.arange(c.window, n)  # first target index of each window
            is_val = t0 >= split
            tr_t0, va_t0 = t0[~is_val], t0[is_val]
            tr_starts.append(offset + tr_t0 - c.window)
            tr_limits.append(np.minimum(c.max_horizon, split - tr_t0))
            va_starts.append(offset + va_t0 - c.window)
            va_limits.append(np.minimum(c.max_horizon, n - va_t0))
            offset += n + c.max_horizon
            used += 1
        if not used:
            raise ValueError(f"no series long enough for window={c.window} and a validation split")
        flat = np.concatenate(chunks)
        return _Prepared(
            train=_Windows(flat, np.concatenate(tr_starts), np.concatenate(tr_limits)),
            val=_Windows(flat, np.concatenate(va_starts), np.concatenate(va_limits)),
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
        c = self.config
        configure_threads(c.num_threads)
        data = self._prepare(series)
        device = resolve_device(c.device)
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
        self, net: ReturnsLSTM, w: _Windows, idx: np.ndarray, device: torch.device
    ) -> torch.Tensor:
        c = self.config
        x, y, mask = w.batch(idx, c.window, c.max_horizon)
        xt = torch.from_numpy(x).unsqueeze(-1).to(device)
        yt = torch.from_numpy(y).to(device)
        mt = torch.from_numpy(mask.astype(np.float32)).to(device)
        pred = net(xt)
        return ((pred - yt) ** 2 * mt).sum() / mt.sum().clamp_min(1.0)

    def _epoch_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A shuffled epoch, capped for big data and repeated for small data."""
        c = self.config
        want = min(max(n, c.min_steps_per_epoch * c.batch_size), c.max_windows_per_epoch)
        reps = -(-want // n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[:want]

    def _train(self, data: _Prepared, device: torch.device) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        net = ReturnsLSTM(c.hidden, c.layers, c.max_horizon).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        val_idx = np.arange(len(data.val))
        if val_idx.size > c.max_val_windows:
            val_idx = np.sort(rng.choice(val_idx, c.max_val_windows, replace=False))
        best = math.inf
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        stale = 0
        epochs_run = 0
        started = time.perf_counter()
        history: list[float] = []
        for _epoch in range(c.epochs):
            net.train()
            perm = self._epoch_indices(len(data.train), rng)
            for i in range(0, perm.size, c.batch_size):
                opt.zero_grad(set_to_none=True)
                loss = self._loss(net, data.train, perm[i : i + c.batch_size], device)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
            net.eval()
            with torch.no_grad():
                vals = [
                    float(self._loss(net, data.val, val_idx[i : i + 4096], device))
                    * min(4096, val_idx.size - i)
                    for i in range(0, val_idx.size, 4096)
                ]
            val_loss = sum(vals) / max(val_idx.size, 1)
            history.append(round(val_loss, 5))
            epochs_run += 1
            if val_loss < best - 1e-5:
                best, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= c.patience:
                    break
            if time.perf_counter() - started > c.max_train_seconds:
                log.info("LSTM training budget %.0fs reached", c.max_train_seconds)
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
        c = self.config
        idx = np.arange(len(val))[: c.max_val_windows]
        x, y, mask = val.batch(idx, c.window, c.max_horizon)
        pred = self._net_predict(x)
        cum_err = np.abs(np.cumsum(pred, axis=1) - np.cumsum(y, axis=1))
        table = np.zeros((c.max_horizon, LEVEL_GRID.size))
        last_ok = -1
        for k in range(c.max_horizon):
            res = cum_err[mask[:, k], k]
            if res.size >= 10:
                n = res.size
                q_levels = np.minimum(np.ceil((n + 1) * LEVEL_GRID) / n, 1.0)
                table[k] = np.quantile(res, q_levels, method="higher")
                last_ok = k
            elif last_ok >= 0:  # too few residuals this far out: random-walk growth
                table[k] = table[last_ok] * math.sqrt((k + 1) / (last_ok + 1))
            else:
                table[k] = np.sqrt(k + 1) * np.abs(np.random.default_rng(0).standard_normal(1))
        self.conformal = np.maximum.accumulate(table, axis=1)

    # --------------------------------------------------------------------- inference
    def _net_predict(self, x: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise NotFittedError("lstm: call fit() first")
        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).unsqueeze(-1))
        return out.numpy().astype(np.float64)

    def _inputs(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        x = np.zeros((len(histories), c.window), dtype=np.float32)
        scales = np.ones(len(histories))
        for i, y in enumerate(histories):
            r = np.diff(np.log(as_price_series(y)))
            s = series_scale(r, c.scale_lookback)
            tail = r[-c.window :] / s
            if tail.size:
                x[i, -tail.size :] = tail
            scales[i] = s
        return x, scales

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
        x, scales = self._inputs(histories)
        cum = np.cumsum(self._net_predict(x)[:, :h], axis=1) * scales[:, None]
        q = np.array([np.interp(level, LEVEL_GRID, self.conformal[k]) for k in range(h)])
        half = q[None, :] * scales[:, None]
        out: list[Forecast] = []
        for i, y in enumerate(histories):
            last = float(y[-1])
            out.append(
                Forecast(
                    mean=last * np.exp(cum[i]),
                    lower=last * np.exp(cum[i] - half[i]),
                    upper=last * np.exp(cum[i] + half[i]),
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
