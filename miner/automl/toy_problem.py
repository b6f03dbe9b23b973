"""A synthetic search problem shaped like OFA-MobileNetV3: cost tables and an accuracy.

The search and the accuracy predictor need nothing but a :class:`SearchSpace`, additive cost
tables and a way to score architectures. This module builds all three without a trained
supernet, so that tests and benchmarks exercise the search on realistic magnitudes
(hundreds of MFLOPs, millions of parameters) and on an accuracy landscape with the usual
diminishing returns and interactions between neighbouring blocks.

Shapes follow MobileNetV3-Large as used by once-for-all: a stride-2 stem, a fixed first
block, five elastic stages of inverted-residual blocks (widths 24/40/80/112/160, strides
2/2/2/1/2), then a 960-channel final expansion, a 1280-wide feature mix and a classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miner.automl.space import AdditiveCost, ArchBatch, SearchSpace

STAGE_WIDTHS = (24, 40, 80, 112, 160, 224, 320)
STAGE_STRIDES = (2, 2, 2, 1, 2, 1, 1)
STEM_WIDTH = 16
FINAL_EXPAND = 960
FEATURE_MIX = 1280
NUM_CLASSES = 1000


def _stage_layout(space: SearchSpace) -> tuple[list[int], list[int], list[int]]:
    """Per slot: input channels, output channels, output spatial divisor (at the stride)."""
    if space.n_stages > len(STAGE_WIDTHS):
        raise ValueError(f"toy problem supports up to {len(STAGE_WIDTHS)} stages")
    c_in, c_out, divisor = [], [], []
    width, div = STEM_WIDTH, 2
    for stage in range(space.n_stages):
        for position in range(space.max_depth):
            stride = STAGE_STRIDES[stage] if position == 0 else 1
            c_in.append(width)
            width = STAGE_WIDTHS[stage]
            div *= stride
            c_out.append(width)
            divisor.append(div)
    return c_in, c_out, divisor


def flops_table(space: SearchSpace) -> AdditiveCost:
    """Multiply-accumulates of an MBConv network over ``space`` (expand, depthwise, project)."""
    c_in, c_out, divisor = _stage_layout(space)
    ks = np.asarray(space.kernel_sizes, dtype=float)
    es = np.asarray(space.expand_ratios, dtype=float)
    base = np.zeros(len(space.resolutions))
    block = np.zeros((len(space.resolutions), space.n_slots, len(ks), len(es)))
    for r, res in enumerate(space.resolutions):
        stem_hw = (res / 2) ** 2
        last_hw = (res / divisor[-1]) ** 2
        base[r] = stem_hw * (3 * 9 * STEM_WIDTH + STEM_WIDTH * 9 + STEM_WIDTH * STEM_WIDTH)
        base[r] += last_hw * c_out[-1] * FINAL_EXPAND + FINAL_EXPAND * FEATURE_MIX
        base[r] += FEATURE_MIX * NUM_CLASSES
        for slot in range(space.n_slots):
            in_hw = (res / (divisor[slot - 1] if slot else 2)) ** 2
            out_hw = (res / divisor[slot]) ** 2
            mid = np.round(c_in[slot] * es)  # [E]
            expand = in_hw * c_in[slot] * mid
            depthwise = out_hw * mid[None, :] * (ks[:, None] ** 2)
            project = out_hw * mid * c_out[slot]
            block[r, slot] = expand[None, :] + depthwise + project[None, :]
    return AdditiveCost(space=space, base=base, block=block)


def params_table(space: SearchSpace) -> AdditiveCost:
    """Weights of the same network; independent of the resolution."""
    c_in, c_out, _ = _stage_layout(space)
    ks = np.asarray(space.kernel_sizes, dtype=float)
    es = np.asarray(space.expand_ratios, dtype=float)
    base_value = 3 * 9 * STEM_WIDTH + STEM_WIDTH * 9 + STEM_WIDTH * STEM_WIDTH
    base_value += c_out[-1] * FINAL_EXPAND + FINAL_EXPAND * FEATURE_MIX
    base_value += FEATURE_MIX * NUM_CLASSES + NUM_CLASSES
    block = np.zeros((space.n_slots, len(ks), len(es)))
    for slot in range(space.n_slots):
        mid = np.round(c_in[slot] * es)
        pointwise = c_in[slot] * mid + mid * c_out[slot]  # [E]
        block[slot] = pointwise[None, :] + mid[None, :] * ks[:, None] ** 2
    n_res = len(space.resolutions)
    return AdditiveCost(
        space=space,
        base=np.full(n_res, float(base_value)),
        block=np.broadcast_to(block, (n_res, *block.shape)).copy(),
    )


def latency_table(space: SearchSpace, gflops_per_ms: float = 0.05) -> AdditiveCost:
    """A latency in milliseconds: FLOPs at a fixed rate plus a fixed launch cost per block."""
    flops = flops_table(space)
    launch_ms = 0.08
    return AdditiveCost(
        space=space,
        base=flops.base / (gflops_per_ms * 1e9) + 0.5,
        block=flops.block / (gflops_per_ms * 1e9) + launch_ms,
    )


@dataclass(frozen=True)
class ToyAccuracy:
    """A smooth, seeded, non-additive accuracy over a space, in [0, 1].

    Every active block adds a seeded gain that grows with kernel and expand ratio, plus a
    term for each pair of consecutive active blocks (so the function is not a sum over
    slots); the resolution adds its own gain; the total saturates through ``1 - exp``.
    """

    space: SearchSpace
    slot_gain: np.ndarray  # [n_slots, K, E]
    pair_gain: np.ndarray  # [n_slots - 1, K, K]
    resolution_gain: np.ndarray  # [R]

    @classmethod
    def create(cls, space: SearchSpace, rng: np.random.Generator) -> ToyAccuracy:
        k = np.asarray(space.kernel_sizes, dtype=float)
        e = np.asarray(space.expand_ratios, dtype=float)
        size = (k[:, None] / k[-1]) * 0.6 + (e[None, :] / e[-1]) * 0.4  # [K, E]
        stage_weight = np.repeat(np.linspace(1.4, 0.8, space.n_stages), space.max_depth)
        noise = rng.uniform(0.7, 1.3, size=(space.n_slots, len(k), len(e)))
        slot_gain = stage_weight[:, None, None] * size[None] * noise
        pair_gain = rng.normal(0.0, 0.08, size=(space.n_slots - 1, len(k), len(k)))
        res = np.asarray(space.resolutions, dtype=float)
        resolution_gain = 3.0 * (res / res[-1]) ** 2
        return cls(
            space=space, slot_gain=slot_gain, pair_gain=pair_gain, resolution_gain=resolution_gain
        )

    def of_batch(self, batch: ArchBatch) -> np.ndarray:
        """``[N]`` accuracies."""
        active = batch.active_mask(self.space)
        slots = np.arange(self.space.n_slots)[None, :]
        gain = np.where(active, self.slot_gain[slots, batch.kernel, batch.expand], 0.0).sum(axis=1)
        both = active[:, 1:] & active[:, :-1]
        pair = self.pair_gain[slots[:, :-1], batch.kernel[:, :-1], batch.kernel[:, 1:]]
        gain = gain + np.where(both, pair, 0.0).sum(axis=1)
        gain = gain + self.resolution_gain[batch.resolution]
        accuracy: np.ndarray = 0.55 + 0.25 * (1.0 - np.exp(-gain / 12.0))
        return accuracy
