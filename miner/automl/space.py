"""The search space of a once-for-all supernet and the architectures in it.

An :class:`Arch` names one sub-network: a kernel size and an expand ratio for every block
slot (``n_stages * max_depth`` of them, stage-major), a depth per stage and an input
resolution. Slots past a stage's depth are inactive; :meth:`SearchSpace.canonical` zeroes
them so that two descriptions of the same network compare, hash and encode equally.

Sampling is pure and deterministic: :func:`subnet_rng` derives a generator from
``(seed, step, k)``, so every replica on every miner picks the same sub-networks for a step
without talking to anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from miner.automl.errors import ArchError


@dataclass(frozen=True)
class Arch:
    """One sub-network of a supernet. Inactive slots hold 0 once canonical."""

    kernel: tuple[int, ...]
    expand: tuple[float, ...]
    depth: tuple[int, ...]
    resolution: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": list(self.kernel),
            "expand": list(self.expand),
            "depth": list(self.depth),
            "resolution": self.resolution,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        try:
            return cls(
                kernel=tuple(int(k) for k in data["kernel"]),
                expand=tuple(float(e) for e in data["expand"]),
                depth=tuple(int(d) for d in data["depth"]),
                resolution=int(data["resolution"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchError(f"cannot read architecture from {sorted(data)}: {exc}") from exc


@dataclass(frozen=True)
class SearchSpace:
    """The elastic dimensions of a supernet: what each block and stage may choose."""

    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[float, ...] = (3.0, 4.0, 6.0)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = (224,)
    n_stages: int = 5

    def __post_init__(self) -> None:
        for name in ("kernel_sizes", "expand_ratios", "depths", "resolutions"):
            values = getattr(self, name)
            if not values or list(values) != sorted(set(values)):
                raise ArchError(f"{name} must be non-empty, sorted and unique, got {values}")
        if self.n_stages < 1:
            raise ArchError(f"n_stages must be >= 1, got {self.n_stages}")

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def n_slots(self) -> int:
        """Block slots in the supernet: ``n_stages * max_depth``."""
        return self.n_stages * self.max_depth

    def restrict(self, **choices: Sequence[Any]) -> SearchSpace:
        """A sub-space, e.g. ``restrict(kernel_sizes=(7,))`` for a progressive-shrinking phase."""
        fixed = {name: tuple(values) for name, values in choices.items()}
        for name, values in fixed.items():
            if not set(values) <= set(getattr(self, name)):
                raise ArchError(f"{name}={values} is not inside {getattr(self, name)}")
        return replace(self, **fixed)  # type: ignore[arg-type]

    def active(self, arch: Arch) -> list[list[int]]:
        """Slot indices of the active blocks, one list per stage."""
        return [
            [stage * self.max_depth + i for i in range(arch.depth[stage])]
            for stage in range(self.n_stages)
        ]

    def canonical(self, arch: Arch) -> Arch:
        """Validate ``arch`` and zero its inactive slots."""
        self.validate(arch)
        live = {slot for stage in self.active(arch) for slot in stage}
        return replace(
            arch,
            kernel=tuple(k if s in live else 0 for s, k in enumerate(arch.kernel)),
            expand=tuple(float(e) if s in live else 0.0 for s, e in enumerate(arch.expand)),
        )

    def validate(self, arch: Arch) -> None:
        """Raise :class:`ArchError` unless every active choice belongs to this space."""
        if len(arch.kernel) != self.n_slots or len(arch.expand) != self.n_slots:
            raise ArchError(
                f"expected {self.n_slots} kernel and expand entries, "
                f"got {len(arch.kernel)} and {len(arch.expand)}"
            )
        if len(arch.depth) != self.n_stages:
            raise ArchError(f"expected {self.n_stages} depths, got {len(arch.depth)}")
        if arch.resolution not in self.resolutions:
            raise ArchError(f"resolution {arch.resolution} not in {self.resolutions}")
        for stage, d in enumerate(arch.depth):
            if d not in self.depths:
                raise ArchError(f"depth {d} of stage {stage} not in {self.depths}")
        for slots in self.active(arch):
            for slot in slots:
                if arch.kernel[slot] not in self.kernel_sizes:
                    raise ArchError(
                        f"kernel {arch.kernel[slot]} at slot {slot} not in {self.kernel_sizes}"
                    )
                if float(arch.expand[slot]) not in self.expand_ratios:
                    raise ArchError(
                        f"expand {arch.expand[slot]} at slot {slot} not in {self.expand_ratios}"
                    )

    def max_arch(self) -> Arch:
        return self._uniform(self.kernel_sizes[-1], self.expand_ratios[-1], self.depths[-1], -1)

    def min_arch(self) -> Arch:
        return self._uniform(self.kernel_sizes[0], self.expand_ratios[0], self.depths[0], 0)

    def _uniform(self, k: int, e: float, d: int, res_index: int) -> Arch:
        return self.canonical(
            Arch(
                kernel=(k,) * self.n_slots,
                expand=(float(e),) * self.n_slots,
                depth=(d,) * self.n_stages,
                resolution=self.resolutions[res_index],
            )
        )

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture, canonical."""
        kernel = rng.choice(np.asarray(self.kernel_sizes), size=self.n_slots)
        expand = rng.choice(np.asarray(self.expand_ratios, dtype=float), size=self.n_slots)
        depth = rng.choice(np.asarray(self.depths), size=self.n_stages)
        resolution = rng.choice(np.asarray(self.resolutions))
        return self.canonical(
            Arch(
                kernel=tuple(int(k) for k in kernel),
                expand=tuple(float(e) for e in expand),
                depth=tuple(int(d) for d in depth),
                resolution=int(resolution),
            )
        )

    # --- encoding for the accuracy predictor -------------------------------------------

    @property
    def encoding_size(self) -> int:
        per_slot = len(self.kernel_sizes) + len(self.expand_ratios)
        return self.n_slots * per_slot + len(self.resolutions)

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """One-hot encoding, shape ``[len(archs), encoding_size]`` float32.

        Each slot contributes a one-hot kernel and a one-hot expand ratio (all zeros when the
        slot is inactive, which also encodes depth); the resolution is one-hot at the end.
        """
        nk, ne = len(self.kernel_sizes), len(self.expand_ratios)
        per_slot = nk + ne
        out = np.zeros((len(archs), self.encoding_size), dtype=np.float32)
        k_index = {k: i for i, k in enumerate(self.kernel_sizes)}
        e_index = {e: i for i, e in enumerate(self.expand_ratios)}
        r_index = {r: i for i, r in enumerate(self.resolutions)}
        for row, arch in enumerate(archs):
            for stage in self.active(arch):
                for slot in stage:
                    base = slot * per_slot
                    out[row, base + k_index[arch.kernel[slot]]] = 1.0
                    out[row, base + nk + e_index[float(arch.expand[slot])]] = 1.0
            out[row, self.n_slots * per_slot + r_index[arch.resolution]] = 1.0
        return out


def subnet_rng(seed: int, step: int, k: int) -> np.random.Generator:
    """The generator for the ``k``-th sub-network of training step ``step``.

    Depends on nothing but its arguments, so any process anywhere derives the same stream.
    """
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, step, k]))


def sample_step(
    space: SearchSpace, seed: int, step: int, n: int, sandwich: bool = False
) -> list[Arch]:
    """The ``n`` sub-networks trained at ``step``.

    With ``sandwich`` the first is the largest and the second the smallest of ``space``, the
    rest random (the sandwich rule); otherwise all ``n`` are random.
    """
    archs: list[Arch] = []
    for k in range(n):
        if sandwich and k == 0:
            archs.append(space.max_arch())
        elif sandwich and k == 1:
            archs.append(space.min_arch())
        else:
            archs.append(space.sample(subnet_rng(seed, step, k)))
    return archs


def step_subnet_names(n: int, sandwich: bool = False) -> list[str]:
    """Names of :func:`sample_step`'s ``n`` sub-networks, in its order: ``max``, ``min``
    under the sandwich rule, then ``random-1``, ``random-2``…"""
    fixed = ["max", "min"][:n] if sandwich else []
    return fixed + [f"random-{k + 1}" for k in range(n - len(fixed))]


# --- index form: a population as integer arrays, for vectorised search and cost models ---


@dataclass(frozen=True)
class ArchBatch:
    """``N`` architectures as choice indices into a :class:`SearchSpace`.

    ``kernel`` and ``expand``: ``[N, n_slots]`` indices into ``kernel_sizes`` /
    ``expand_ratios`` (values at inactive slots are ignored); ``depth``: ``[N, n_stages]``
    indices into ``depths``; ``resolution``: ``[N]`` indices into ``resolutions``.
    """

    kernel: np.ndarray
    expand: np.ndarray
    depth: np.ndarray
    resolution: np.ndarray

    def __len__(self) -> int:
        return int(self.resolution.shape[0])

    def active_mask(self, space: SearchSpace) -> np.ndarray:
        """``[N, n_slots]`` bool: which block slots run."""
        depth_values = np.asarray(space.depths)[self.depth]  # [N, n_stages]
        position = np.tile(np.arange(space.max_depth), space.n_stages)  # [n_slots]
        per_slot_depth = np.repeat(depth_values, space.max_depth, axis=1)  # [N, n_slots]
        return position[None, :] < per_slot_depth


def to_batch(space: SearchSpace, archs: Sequence[Arch]) -> ArchBatch:
    """Index form of ``archs``; inactive slots get index 0."""
    k_index = {k: i for i, k in enumerate(space.kernel_sizes)}
    e_index = {e: i for i, e in enumerate(space.expand_ratios)}
    d_index = {d: i for i, d in enumerate(space.depths)}
    r_index = {r: i for i, r in enumerate(space.resolutions)}
    return ArchBatch(
        kernel=np.array([[k_index.get(k, 0) for k in a.kernel] for a in archs], dtype=np.int64),
        expand=np.array(
            [[e_index.get(float(e), 0) for e in a.expand] for a in archs], dtype=np.int64
        ),
        depth=np.array([[d_index[d] for d in a.depth] for a in archs], dtype=np.int64),
        resolution=np.array([r_index[a.resolution] for a in archs], dtype=np.int64),
    )


def from_batch(space: SearchSpace, batch: ArchBatch) -> list[Arch]:
    """The canonical architectures of ``batch``."""
    ks, es = np.asarray(space.kernel_sizes), np.asarray(space.expand_ratios, dtype=float)
    ds, rs = np.asarray(space.depths), np.asarray(space.resolutions)
    return [
        space.canonical(
            Arch(
                kernel=tuple(int(k) for k in ks[batch.kernel[i]]),
                expand=tuple(float(e) for e in es[batch.expand[i]]),
                depth=tuple(int(d) for d in ds[batch.depth[i]]),
                resolution=int(rs[batch.resolution[i]]),
            )
        )
        for i in range(len(batch))
    ]


@dataclass(frozen=True)
class AdditiveCost:
    """A cost that is a sum over active blocks plus a per-resolution base.

    FLOPs, parameters and table latency of an OFA-style supernet all have this form, since
    each block slot's input and output widths are fixed by the space: only its own kernel
    and expand ratio (and the resolution) change its cost.

    ``base``: ``[n_resolutions]`` (stem, head, classifier); ``block``:
    ``[n_resolutions, n_slots, n_kernels, n_expands]``.
    """

    space: SearchSpace
    base: np.ndarray
    block: np.ndarray

    def __post_init__(self) -> None:
        s = self.space
        want = (len(s.resolutions), s.n_slots, len(s.kernel_sizes), len(s.expand_ratios))
        if self.block.shape != want or self.base.shape != (len(s.resolutions),):
            raise ArchError(
                f"cost tables {self.base.shape}/{self.block.shape} do not fit the space {want}"
            )

    def of_batch(self, batch: ArchBatch) -> np.ndarray:
        """``[N]`` float64 costs, vectorised."""
        n_slots = self.space.n_slots
        slots = np.arange(n_slots)[None, :]
        r = batch.resolution[:, None]
        per_block = self.block[r, slots, batch.kernel, batch.expand]  # [N, n_slots]
        per_block = np.where(batch.active_mask(self.space), per_block, 0.0)
        costs: np.ndarray = self.base[batch.resolution] + per_block.sum(axis=1)
        return costs

    def of(self, arch: Arch) -> float:
        return float(self.of_batch(to_batch(self.space, [arch]))[0])
