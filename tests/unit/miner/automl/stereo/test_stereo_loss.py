"""Multi-scale loss, its schedule, and the EPE / D1 metrics."""

from __future__ import annotations

import pytest
import torch

from miner.automl.stereo.loss import (
    ScaleSchedule,
    d1,
    default_schedule,
    epe,
    multiscale_loss,
    stereo_errors,
    valid_mask,
)


def test_stereo_schedule_interpolates_and_holds() -> None:
    s = ScaleSchedule(((0.0, (1.0, 0.0)), (0.5, (0.0, 1.0))))
    assert s.weights(-1.0) == (1.0, 0.0)
    assert s.weights(0.25) == pytest.approx((0.5, 0.5))
    assert s.weights(0.9) == (0.0, 1.0)
    with pytest.raises(ValueError):
        ScaleSchedule(((0.5, (1.0,)), (0.1, (1.0,))))
    with pytest.raises(ValueError):
        ScaleSchedule(((0.0, (1.0,)), (1.0, (1.0, 2.0))))


def test_stereo_default_schedule_moves_weight_to_the_finest_scale() -> None:
    s = default_schedule(7)
    start, end = s.weights(0.0), s.weights(1.0)
    assert len(start) == 7 and start[0] > start[-1]
    assert end[-1] == max(end) and end[0] == 0.0


def test_stereo_metrics_by_hand() -> None:
    truth = torch.tensor([[[10.0, 20.0, 0.0, 50.0, 100.0]]])  # 0 and >= max are invalid
    pred = torch.tensor([[[12.0, 24.0, 7.0, 50.0, 0.0]]])
    assert valid_mask(truth, 64.0).tolist() == [[[True, True, False, True, False]]]
    assert epe(pred, truth, 64.0) == pytest.approx((2 + 4 + 0) / 3)
    # error 4 > 3 and > 1 (5% of 20): an outlier; error 2 is not
    assert d1(pred, truth, 64.0) == pytest.approx(1 / 3)
    total, bad, n = stereo_errors(pred, truth, 64.0)
    assert (total, bad, n) == (6.0, 1, 3)


def test_stereo_multiscale_loss_weights_scales_and_ignores_invalid() -> None:
    truth = torch.full((1, 8, 8), 4.0)
    truth[0, 0, 0] = 0.0
    exact_fine = torch.full((1, 1, 8, 8), 4.0)
    exact_fine[0, 0, 0, 0] = 99.0  # wrong only where the truth is unknown
    coarse = torch.full((1, 1, 2, 2), 6.0)  # off by 2 everywhere after upsampling
    preds = [coarse, exact_fine]
    assert float(multiscale_loss(preds, truth, (0.0, 1.0), 64.0)) == pytest.approx(0.0)
    assert float(multiscale_loss(preds, truth, (0.5, 1.0), 64.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        multiscale_loss(preds, truth, (1.0,), 64.0)


def test_stereo_multiscale_loss_has_gradients() -> None:
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = multiscale_loss([pred], torch.full((1, 8, 8), 3.0), (1.0,), 64.0)
    loss.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
