"""Elastic ops: they slice shared weights, and the kernel transform is OFA's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miner.automl.ops import (
    ElasticBatchNorm2d,
    ElasticDepthwise,
    ElasticPointwise,
    ElasticSqueezeExcite,
    make_divisible,
)


@pytest.mark.parametrize(("value", "want"), [(24, 24), (20, 24), (37, 40), (3, 8), (100, 104)])
def test_make_divisible(value: float, want: int) -> None:
    assert make_divisible(value, 8) == want


def test_pointwise_uses_leading_slice() -> None:
    conv = ElasticPointwise(6, 10)
    x = torch.randn(2, 4, 5, 5)
    want = F.conv2d(x, conv.weight[:7, :4].clone())
    assert torch.equal(conv(x, 7), want)


def test_depthwise_max_kernel_is_a_view_and_small_kernels_are_transformed_centres() -> None:
    dw = ElasticDepthwise(8, (3, 5, 7), stride=1)
    assert sorted(dw.transforms) == ["5to3", "7to5"]
    assert dw.kernel_weight(8, 7).data_ptr() == dw.weight.data_ptr()
    # identity transforms: the centre crop
    assert torch.equal(dw.kernel_weight(4, 3), dw.weight[:4, :, 2:5, 2:5])
    with torch.no_grad():
        dw.transforms["7to5"].mul_(2.0)
        dw.transforms["5to3"].copy_(torch.randn(9, 9))
    centre5 = dw.weight[:4, :, 1:6, 1:6].reshape(4, 25) * 2.0
    want = (centre5.view(4, 1, 5, 5)[:, :, 1:4, 1:4].reshape(4, 9) @ dw.transforms["5to3"])
    assert torch.allclose(dw.kernel_weight(4, 3), want.view(4, 1, 3, 3))
    assert dw.transform_names(3) == ["7to5", "5to3"] and dw.transform_names(7) == []
    y = dw(torch.randn(2, 4, 9, 9), 5)
    assert y.shape == (2, 4, 9, 9)


def test_batchnorm_updates_only_active_running_stats_in_place() -> None:
    bn = ElasticBatchNorm2d(8)
    bn(torch.randn(4, 5, 3, 3) + 3.0)
    assert (bn.running_mean[:5] > 0.1).all()
    assert torch.equal(bn.running_mean[5:], torch.zeros(3))
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    x = torch.randn(2, 5, 3, 3)
    ref = torch.nn.BatchNorm2d(5).eval()
    ref.load_state_dict({k: (v[:5] if v.ndim else v) for k, v in bn.state_dict().items()})
    assert torch.allclose(bn(x), ref(x))


def test_squeeze_excite_reduced_width_follows_channels() -> None:
    se = ElasticSqueezeExcite(96, divisor=8)
    assert se.reduce.weight.shape[0] == 24 and se.reduced(48) == 16
    x = torch.randn(2, 48, 4, 4)
    assert se(x).shape == x.shape
