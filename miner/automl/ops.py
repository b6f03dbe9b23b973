"""Elastic layers: built at their largest size, they run on the leading slice of it.

The protocol follows once-for-all's dynamic layers: each op owns the weights of its largest
configuration and a forward pass uses views of them (``weight[:out, :in]``) through the
functional API, so sub-networks share weights and nothing is copied. Input width is read
from the input tensor; output width (or kernel size) is an argument chosen by the block.

The only computed weight is the elastic kernel: a smaller depthwise kernel is the centre
of the next larger one passed through a small learned ``k*k x k*k`` matrix (7 -> 5 -> 3),
shared across channels as in OFA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def lead(t: torch.Tensor, n0: int, n1: int | None = None) -> torch.Tensor:
    """``t[:n0, :n1]`` as a view, skipping the slice op (and its backward) where it is whole.

    Cutting both dimensions is one strided view, not two slices: its backward then writes one
    zero-filled full-size gradient instead of two (half the kernel launches on a GPU).
    """
    cut0 = n0 != t.shape[0]
    cut1 = n1 is not None and n1 != t.shape[1]
    if cut0 and cut1:
        return t.as_strided((n0, n1, *t.shape[2:]), t.stride(), t.storage_offset())
    if cut0:
        return t[:n0]
    if cut1:
        return t[:, :n1]
    return t


class ElasticPointwise(nn.Module):
    """1x1 convolution, no bias. ``x``: [B, c_in <= in_max, H, W] -> [B, out, H, W]."""

    def __init__(self, in_max: int, out_max: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_max, in_max, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return F.conv2d(x, lead(self.weight, out_channels, x.shape[1]))


class ElasticDepthwise(nn.Module):
    """Depthwise convolution with an elastic kernel and elastic channel count.

    ``weight``: [C_max, 1, K, K] for the largest kernel ``K``; ``transforms[f"{a}to{b}"]``:
    [b*b, b*b] matrices, initialised to the identity. A kernel ``k < K`` is OFA's chain
    (centre of the next larger kernel, times its matrix, down to ``k``), evaluated as one
    product ``weight.view(C, K*K) @ (S @ M @ S @ M ...)`` where each ``S`` is a constant 0/1
    matrix that picks a centre; the weight itself is only viewed, never copied.
    """

    def __init__(self, channels_max: int, kernel_sizes: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        k_max = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(channels_max, 1, k_max, k_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        pairs = list(zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1], strict=True))
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in pairs}
        )
        for big, small in pairs:
            self.register_buffer(f"centre_{big}to{small}", _centre_selector(big, small),
                                 persistent=False)

    def transform_names(self, kernel: int) -> list[str]:
        """The transform matrices a kernel of size ``kernel`` goes through, largest first."""
        ks = self.kernel_sizes
        i = ks.index(kernel)
        return [f"{ks[j]}to{ks[j - 1]}" for j in range(len(ks) - 1, i, -1)]

    def kernel_weight(self, channels: int, kernel: int) -> torch.Tensor:
        """[channels, 1, kernel, kernel]: a view for the largest kernel, computed otherwise."""
        w = lead(self.weight, channels)
        k_max = self.kernel_sizes[-1]
        if kernel == k_max:
            return w
        # In float32 even under autocast: the products are tiny, and casting each factor to
        # bf16 would cost more kernel launches than the products themselves (the convolution
        # casts the result once, as it casts a static network's weight).
        with torch.autocast(w.device.type, enabled=False):
            chain = None
            for name in self.transform_names(kernel):
                step = getattr(self, f"centre_{name}") @ self.transforms[name]
                chain = step if chain is None else chain @ step
            assert chain is not None
            flat = w.view(channels, k_max * k_max) @ chain
        return flat.view(channels, 1, kernel, kernel)

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel_weight(c, kernel), None, self.stride, kernel // 2, 1, c)


def _centre_selector(big: int, small: int) -> torch.Tensor:
    """[big*big, small*small] 0/1: ``flat_big @ S`` is the flattened centre ``small x small``."""
    offset = (big - small) // 2
    rows = [(i + offset) * big + (j + offset) for i in range(small) for j in range(small)]
    selector = torch.zeros(big * big, small * small)
    selector[rows, range(small * small)] = 1.0
    return selector


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` channels; running statistics update in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        else:
            momentum = 0.0
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            momentum,
            self.eps,
        )


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite over the active channels; the reduced width follows them.

    The reduced width for ``c`` active channels is ``make_divisible(c // 4, divisor)``,
    its leading slice of the largest one.
    """

    def __init__(self, channels_max: int, divisor: int) -> None:
        super().__init__()
        self.divisor = divisor
        reduced = make_divisible(channels_max // 4, divisor)
        self.reduce = nn.Conv2d(channels_max, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels_max, 1)

    def reduced(self, channels: int) -> int:
        return make_divisible(channels // 4, self.divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = self.reduced(c)
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, lead(self.reduce.weight, r, c), lead(self.reduce.bias, r)))
        s = F.conv2d(s, lead(self.expand.weight, c, r), lead(self.expand.bias, c))
        return x * F.hardsigmoid(s)
