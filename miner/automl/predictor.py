"""An accuracy predictor: a small MLP from an architecture's one-hot encoding to accuracy.

Measuring a sub-network's accuracy means recalibrating BatchNorm and running a validation
set; the search needs tens of thousands of scores. As in once-for-all, a few thousand
measured ``(arch, accuracy)`` pairs train an MLP that stands in for the measurement.

Training runs in torch (CPU is plenty); inference runs in numpy on cached float32 weights,
since the search scores ~100 architectures per generation and torch's per-call overhead
would dominate at that size. :func:`encode_batch` builds the encoding straight from a
population's index arrays (:class:`ArchBatch`), equal to :meth:`SearchSpace.encode`.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from miner.automl.errors import ArchError, AutoMLError, CheckpointError
from miner.automl.space import Arch, ArchBatch, SearchSpace

log = logging.getLogger(__name__)

_FORMAT = "manta-accuracy-predictor/1"
_SMALL_BATCH_ROWS = 2048


def encode_batch(space: SearchSpace, batch: ArchBatch) -> np.ndarray:
    """``[N, space.encoding_size]`` float32, equal to ``space.encode(from_batch(space, batch))``.

    Built with fancy indexing on the index arrays: each active slot sets one kernel and one
    expand column; inactive slots stay zero (which is how the encoding carries depth).
    """
    n = len(batch)
    nk, ne = len(space.kernel_sizes), len(space.expand_ratios)
    per_slot = nk + ne
    out = np.zeros((n, space.encoding_size), dtype=np.float32)
    rows = np.arange(n)[:, None]
    slot_base = (np.arange(space.n_slots) * per_slot)[None, :]
    active = batch.active_mask(space).astype(np.float32)
    out[rows, slot_base + batch.kernel] = active
    out[rows, slot_base + nk + batch.expand] = active
    out[np.arange(n), space.n_slots * per_slot + batch.resolution] = 1.0
    return out


def kendall_tau(x: np.ndarray, y: np.ndarray, chunk_rows: int = 512) -> float:
    """Kendall's tau-b rank correlation of two ``[N]`` vectors (ties counted as in scipy).

    Compares all pairs, ``chunk_rows`` rows at a time so memory stays ``O(chunk_rows * N)``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    n = x.size
    if x.shape != y.shape or n < 2:
        raise ValueError(f"need two vectors of the same length >= 2, got {x.shape} and {y.shape}")
    score, tied_x, tied_y = 0.0, 0, 0
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        later = np.arange(n)[None, :] > np.arange(start, stop)[:, None]  # each pair once
        sx = np.sign(x[start:stop, None] - x[None, :])[later]
        sy = np.sign(y[start:stop, None] - y[None, :])[later]
        score += float(np.dot(sx, sy))
        tied_x += int(np.count_nonzero(sx == 0))
        tied_y += int(np.count_nonzero(sy == 0))
    n_pairs = n * (n - 1) // 2
    if tied_x == n_pairs or tied_y == n_pairs:
        return float("nan")
    return score / float(np.sqrt(float(n_pairs - tied_x) * float(n_pairs - tied_y)))


@dataclass(frozen=True)
class PredictorConfig:
    """How the MLP is shaped and trained."""

    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.2


@dataclass(frozen=True)
class FitReport:
    """What training achieved, measured on the held-out sub-networks."""

    n_train: int
    n_val: int
    rmse: float
    kendall_tau: float
    train_rmse: float
    epochs: int
    fit_s: float


class AccuracyPredictor:
    """Predicts the accuracy of architectures of one :class:`SearchSpace`.

    Untrained until :meth:`fit` or :meth:`load`. Targets are standardised for training and
    mapped back on prediction, so accuracies in [0, 1] or in percent both work.
    """

    def __init__(self, space: SearchSpace, config: PredictorConfig | None = None) -> None:
        self.space = space
        self.config = config or PredictorConfig()
        self._weights: list[tuple[np.ndarray, np.ndarray]] = []  # (W [in, out], b [out])
        self._target_mean = 0.0
        self._target_std = 1.0
        self._blas: Any = None  # a threadpoolctl controller, made on the first small forward

    @property
    def trained(self) -> bool:
        return bool(self._weights)

    # --- training -----------------------------------------------------------------------

    def fit(
        self,
        archs: Sequence[Arch],
        accuracies: Sequence[float] | np.ndarray,
        rng: np.random.Generator,
    ) -> FitReport:
        """Train on ``archs``; hold out ``config.val_fraction`` of them and report on those.

        ``rng`` decides the split, the initial weights and the minibatch order; nothing
        global is seeded, so two fits with equal generators give equal predictors.
        """
        x = self.space.encode(archs)
        y = np.asarray(accuracies, dtype=np.float64).ravel()
        if y.shape[0] != x.shape[0] or x.shape[0] < 10:
            raise AutoMLError(
                f"need >= 10 archs with one accuracy each, got {x.shape[0]} and {y.shape[0]}"
            )
        order = rng.permutation(x.shape[0])
        n_val = max(2, round(self.config.val_fraction * x.shape[0]))
        val, train = order[:n_val], order[n_val:]
        started = time.perf_counter()
        self._target_mean = float(y[train].mean())
        self._target_std = float(y[train].std()) or 1.0
        self._weights = _train_mlp(
            x[train], (y[train] - self._target_mean) / self._target_std, self.config, rng
        )
        fit_s = time.perf_counter() - started
        predicted = self._forward(x[val])
        train_predicted = self._forward(x[train])
        report = FitReport(
            n_train=int(train.size),
            n_val=int(val.size),
            rmse=float(np.sqrt(np.mean((predicted - y[val]) ** 2))),
            kendall_tau=kendall_tau(predicted, y[val]),
            train_rmse=float(np.sqrt(np.mean((train_predicted - y[train]) ** 2))),
            epochs=self.config.epochs,
            fit_s=fit_s,
        )
        log.info(
            "predictor fitted n_train=%d n_val=%d rmse=%.5f kendall_tau=%.4f fit_s=%.2f",
            report.n_train,
            report.n_val,
            report.rmse,
            report.kendall_tau,
            report.fit_s,
        )
        return report

    # --- inference ----------------------------------------------------------------------

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        """``[N]`` predicted accuracies of architectures or of an encoded ``[N, F]`` matrix."""
        x = archs if isinstance(archs, np.ndarray) else self.space.encode(archs)
        if x.ndim != 2 or x.shape[1] != self.space.encoding_size:
            raise ArchError(
                f"encoded matrix must be [N, {self.space.encoding_size}], got {x.shape}"
            )
        return self._forward(x.astype(np.float32, copy=False))

    def predict_batch(self, batch: ArchBatch) -> np.ndarray:
        """``[N]`` predicted accuracies of a population in index form: one forward for all."""
        return self._forward(encode_batch(self.space, batch))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if not self._weights:
            raise AutoMLError("the accuracy predictor is neither trained nor loaded")
        h = x
        last = len(self._weights) - 1
        with self._blas_threads(x.shape[0]):
            for i, (w, b) in enumerate(self._weights):
                h = h @ w
                h += b
                if i < last:
                    np.maximum(h, 0.0, out=h)
        return h[:, 0].astype(np.float64) * self._target_std + self._target_mean

    def _blas_threads(self, n_rows: int) -> AbstractContextManager[object]:
        """Single-threaded BLAS for small batches (a search generation's ~100 rows).

        Multi-threaded BLAS gains ~1.5x on an idle machine at this size but stalls 3-20x as
        soon as another process holds a core, since its threads wait on each other.
        """
        if n_rows > _SMALL_BATCH_ROWS:
            return nullcontext()
        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self._blas = False
            else:
                self._blas = ThreadpoolController()
        if self._blas is False:
            return nullcontext()
        limit: AbstractContextManager[object] = self._blas.limit(limits=1, user_api="blas")
        return limit

    # --- persistence --------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write weights and the space description to one safetensors file."""
        from safetensors.numpy import save_file

        if not self._weights:
            raise CheckpointError(
                path=str(path), detail="nothing to save: the predictor is untrained"
            )
        tensors = {}
        for i, (w, b) in enumerate(self._weights):
            tensors[f"layers.{i}.weight"] = np.ascontiguousarray(w.T)  # torch layout [out, in]
            tensors[f"layers.{i}.bias"] = np.ascontiguousarray(b)
        meta = {
            "format": _FORMAT,
            "space": json.dumps(_space_to_dict(self.space), sort_keys=True),
            "target_mean": repr(self._target_mean),
            "target_std": repr(self._target_std),
            "n_layers": str(len(self._weights)),
        }
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path, space: SearchSpace | None = None) -> AccuracyPredictor:
        """Read a predictor written by :meth:`save`; if ``space`` is given it must match."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise CheckpointError(path=str(path), detail=f"format {meta.get('format')!r}")
                n_layers = int(meta["n_layers"])
                weights = [
                    (
                        np.ascontiguousarray(handle.get_tensor(f"layers.{i}.weight").T),
                        handle.get_tensor(f"layers.{i}.bias"),
                    )
                    for i in range(n_layers)
                ]
                saved_space = _space_from_json(meta["space"])
                mean, std = float(meta["target_mean"]), float(meta["target_std"])
        except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
            raise CheckpointError(path=str(path), detail=str(exc)) from exc
        if space is not None and space != saved_space:
            raise CheckpointError(path=str(path), detail=f"trained for {saved_space}, not {space}")
        hidden = tuple(int(w.shape[1]) for w, _ in weights[:-1])
        predictor = cls(saved_space, replace(PredictorConfig(), hidden=hidden))
        predictor._weights = weights
        predictor._target_mean, predictor._target_std = mean, std
        return predictor


def _space_to_dict(space: SearchSpace) -> dict[str, object]:
    return {
        "kernel_sizes": list(space.kernel_sizes),
        "expand_ratios": list(space.expand_ratios),
        "depths": list(space.depths),
        "resolutions": list(space.resolutions),
        "n_stages": space.n_stages,
    }


def _space_from_json(text: str) -> SearchSpace:
    data = json.loads(text)
    return SearchSpace(
        kernel_sizes=tuple(int(v) for v in data["kernel_sizes"]),
        expand_ratios=tuple(float(v) for v in data["expand_ratios"]),
        depths=tuple(int(v) for v in data["depths"]),
        resolutions=tuple(int(v) for v in data["resolutions"]),
        n_stages=int(data["n_stages"]),
    )


def _train_mlp(
    x: np.ndarray, y: np.ndarray, config: PredictorConfig, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Adam on mean squared error; returns ``(W [in, out], b [out])`` per layer as float32."""
    import torch

    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    sizes = [x.shape[1], *config.hidden, 1]
    params: list[torch.Tensor] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / np.sqrt(fan_in)
        w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound * np.sqrt(3.0)
        b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
        params += [w.requires_grad_(), b.requires_grad_()]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-x.shape[0] // config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, config.epochs * steps_per_epoch
    )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    for _ in range(config.epochs):
        perm = torch.randperm(xt.shape[0], generator=gen)
        for start in range(0, xt.shape[0], config.batch_size):
            idx = perm[start : start + config.batch_size]
            h = xt[idx]
            for i in range(0, len(params), 2):
                h = h @ params[i] + params[i + 1]
                if i + 2 < len(params):
                    h = torch.relu(h)
            loss = torch.mean((h[:, 0] - yt[idx]) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
    return [
        (params[i].detach().numpy().copy(), params[i + 1].detach().numpy().copy())
        for i in range(0, len(params), 2)
    ]
