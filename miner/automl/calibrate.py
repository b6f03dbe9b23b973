"""BatchNorm recalibration for one sub-network of a weight-sharing supernet.

Running statistics accumulated while training many sub-networks fit none of them well.
Before a sub-network is evaluated or exported, its BatchNorm channels get fresh statistics:
reset, then re-estimated as a cumulative average (``momentum=None``) over a sample of
training batches in train mode without gradients. Channels the sub-network does not use
(and BatchNorm layers it does not run through) keep their values exactly. The same code
serves every supernet kind: ``bn_modules(arch)`` names the layers, ``fit_input`` the size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from miner.automl.space import Arch
from miner.automl.supernet import OFASupernet
from miner.automl.train.task import fit_input

logger = logging.getLogger(__name__)


@torch.no_grad()
def recalibrate_bn(
    supernet: OFASupernet,
    arch: Arch,
    batches: Iterable[torch.Tensor],
    device: torch.device | None = None,
) -> int:
    """Re-estimate ``arch``'s BatchNorm statistics from ``batches`` ([B, C, H, W] inputs:
    images, or stereo pairs stacked on channels), each fitted to ``arch``'s input size.

    Leaves ``arch`` active and the module in eval mode; returns the number of batches used.
    """
    supernet.set_active(arch)
    bns = supernet.bn_modules(arch)
    saved = [
        (
            bn.running_mean.clone(),
            bn.running_var.clone(),
            bn.num_batches_tracked.clone(),
            bn.momentum,
        )
        for bn in bns
    ]
    used_channels: dict[int, int] = {}

    def remember(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        used_channels[id(module)] = max(used_channels.get(id(module), 0), inputs[0].shape[1])

    hooks = [bn.register_forward_pre_hook(remember) for bn in bns]
    for bn in bns:
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.num_batches_tracked.zero_()
        bn.momentum = None
    supernet.eval()
    for bn in bns:
        bn.train()
    n = 0
    try:
        for x in batches:
            x = x if device is None else x.to(device)
            supernet(fit_input(supernet, x, arch))
            n += 1
    finally:
        for hook in hooks:
            hook.remove()
        for bn, (mean, var, tracked, momentum) in zip(bns, saved, strict=True):
            c = used_channels.get(id(bn), 0) if n else 0
            bn.running_mean[c:] = mean[c:]
            bn.running_var[c:] = var[c:]
            if c == 0:
                bn.num_batches_tracked.copy_(tracked)
            bn.momentum = momentum
        supernet.eval()
    logger.debug("bn recalibrated layers=%d batches=%d", len(bns), n)
    return n
