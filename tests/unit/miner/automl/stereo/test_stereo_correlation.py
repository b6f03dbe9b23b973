"""The vectorised correlation layer against its per-displacement reference."""

from __future__ import annotations

import pytest
import torch

from miner.automl.stereo.correlation import Correlation, correlation, correlation_reference


@pytest.mark.parametrize(("shape", "max_disp"), [((2, 5, 4, 9), 4), ((1, 3, 2, 6), 9),
                                                 ((3, 8, 5, 16), 0), ((2, 16, 8, 32), 8)])
def test_stereo_correlation_matches_reference_values_and_gradients(
        shape: tuple[int, int, int, int], max_disp: int) -> None:
    gen = torch.Generator().manual_seed(sum(shape) + max_disp)
    left = torch.randn(*shape, generator=gen, requires_grad=True)
    right = torch.randn(*shape, generator=gen, requires_grad=True)
    fast = correlation(left, right, max_disp)
    ref = correlation_reference(left, right, max_disp)
    assert fast.shape == (shape[0], max_disp + 1, shape[2], shape[3])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    weights = torch.randn(fast.shape, generator=gen)
    g_fast = torch.autograd.grad((fast * weights).sum(), (left, right))
    g_ref = torch.autograd.grad((ref * weights).sum(), (left, right))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_stereo_correlation_peaks_at_the_true_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    right = torch.randn(1, 16, 4, 40, generator=gen)
    shift = 5
    left = torch.zeros_like(right)
    left[..., shift:] = right[..., :-shift]  # left x shows right x - 5
    cost = Correlation(8)(left, right)
    assert cost.shape[1] == 9
    best = cost[..., 10:].argmax(dim=1)
    assert bool((best == shift).all())
    assert float(cost[0, 3, 0, 0]) == 0.0  # x - d < 0 reads nothing
