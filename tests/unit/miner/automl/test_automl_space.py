"""Search space: validation, canonical form, deterministic sampling, encodings, additive costs."""

from __future__ import annotations

import numpy as np
import pytest

from miner.automl.errors import ArchError
from miner.automl.space import (
    AdditiveCost,
    Arch,
    SearchSpace,
    from_batch,
    sample_step,
    step_subnet_names,
    subnet_rng,
    to_batch,
)

SPACE = SearchSpace(resolutions=(160, 192, 224))


def test_sampling_is_a_pure_function_of_seed_step_k() -> None:
    first = sample_step(SPACE, seed=7, step=11, n=4)
    again = sample_step(SPACE, seed=7, step=11, n=4)
    other_step = sample_step(SPACE, seed=7, step=12, n=4)
    assert first == again
    assert first != other_step
    assert len(set(first)) > 1, "the K sub-networks of a step should differ"


def test_sandwich_rule_puts_largest_and_smallest_first() -> None:
    archs = sample_step(SPACE, seed=1, step=0, n=4, sandwich=True)
    assert archs[0] == SPACE.max_arch()
    assert archs[1] == SPACE.min_arch()


def test_canonical_zeroes_inactive_slots() -> None:
    arch = SPACE.sample(subnet_rng(3, 0, 0))
    for stage, slots in enumerate(SPACE.active(arch)):
        inactive = range(stage * SPACE.max_depth + arch.depth[stage], (stage + 1) * SPACE.max_depth)
        assert all(arch.kernel[s] == 0 and arch.expand[s] == 0.0 for s in inactive)
        assert all(arch.kernel[s] in SPACE.kernel_sizes for s in slots)


@pytest.mark.parametrize(
    "change",
    [
        {"resolution": 100},
        {"depth": (1, 2, 2, 2, 2)},
        {"kernel": (9,) * 20},
        {"expand": (5.0,) * 20},
        {"kernel": (3,) * 3},
    ],
)
def test_validate_refuses_outside_architectures(change: dict) -> None:
    arch = SPACE.max_arch()
    bad = Arch(**{**arch.__dict__, **change})
    with pytest.raises(ArchError):
        SPACE.validate(bad)


def test_restrict_refuses_choices_outside_the_space() -> None:
    assert SPACE.restrict(kernel_sizes=(7,)).kernel_sizes == (7,)
    with pytest.raises(ArchError):
        SPACE.restrict(kernel_sizes=(9,))


def test_dict_round_trip_and_bad_dict() -> None:
    arch = SPACE.sample(subnet_rng(0, 1, 2))
    assert Arch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ArchError):
        Arch.from_dict({"kernel": [3]})


def test_batch_round_trip_and_encoding_width() -> None:
    archs = [SPACE.sample(subnet_rng(0, i, 0)) for i in range(64)]
    assert from_batch(SPACE, to_batch(SPACE, archs)) == archs
    encoded = SPACE.encode(archs)
    assert encoded.shape == (64, SPACE.encoding_size)
    active_blocks = np.array([sum(a.depth) for a in archs])
    # one kernel bit + one expand bit per active block, one resolution bit
    assert np.array_equal(encoded.sum(axis=1), 2 * active_blocks + 1)


def test_additive_cost_matches_a_direct_sum() -> None:
    rng = np.random.default_rng(0)
    shape = (
        len(SPACE.resolutions), SPACE.n_slots, len(SPACE.kernel_sizes), len(SPACE.expand_ratios)
    )
    cost = AdditiveCost(SPACE, base=rng.random(3), block=rng.random(shape))
    archs = [SPACE.sample(subnet_rng(5, i, 0)) for i in range(32)]
    batch = to_batch(SPACE, archs)
    for i, arch in enumerate(archs):
        r = SPACE.resolutions.index(arch.resolution)
        direct = cost.base[r] + sum(
            cost.block[r, s, SPACE.kernel_sizes.index(arch.kernel[s]),
                       SPACE.expand_ratios.index(arch.expand[s])]
            for stage in SPACE.active(arch)
            for s in stage
        )
        assert cost.of_batch(batch)[i] == pytest.approx(direct)
        assert cost.of(arch) == pytest.approx(direct)


def test_additive_cost_refuses_wrong_table_shape() -> None:
    with pytest.raises(ArchError):
        AdditiveCost(SPACE, base=np.zeros(3), block=np.zeros((3, 4, 3, 3)))


@pytest.mark.parametrize("sandwich", [True, False])
def test_step_subnet_names_follow_the_sampling_order(sandwich: bool) -> None:
    space = SearchSpace()
    archs = sample_step(space, 3, 7, 4, sandwich)
    names = step_subnet_names(4, sandwich)
    assert len(names) == 4 and len(set(names)) == 4
    for name, arch in zip(names, archs, strict=True):
        if name == "max":
            assert arch == space.max_arch()
        elif name == "min":
            assert arch == space.min_arch()
        else:
            assert name.startswith("random-")
    assert names[:2] == (["max", "min"] if sandwich else ["random-1", "random-2"])
