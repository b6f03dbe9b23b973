"""The task metric of one sub-network on a held-out set (after BN recalibration, typically)."""

from __future__ import annotations

import torch

from miner.automl.data import ImageDataset, iterate_once
from miner.automl.space import Arch
from miner.automl.train.task import ClassificationTask, TaskHead, fit_input


@torch.no_grad()
def evaluate_metric(
    net: torch.nn.Module,
    arch: Arch | None,
    data: ImageDataset,
    task: TaskHead,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """``task``'s metric over ``data`` (exact whatever the batching) of ``arch``, or of a
    static ``net`` when ``arch`` is None (its inputs must then have the net's size).

    Runs in eval mode; the module's train/eval mode is restored afterwards.
    """
    was_training = net.training
    if arch is not None:
        net.set_active(arch)  # type: ignore[operator]
    net.eval()
    total, count = 0.0, 0
    try:
        for x, y in iterate_once(data, batch_size):
            if device is not None:
                x, y = x.to(device), y.to(device)
            if arch is not None:
                x = fit_input(net, x, arch)
            batch_total, batch_count = task.metric_sums(net(x), y)
            total, count = total + batch_total, count + batch_count
    finally:
        net.train(was_training)
    return total / max(count, 1)


def evaluate_accuracy(
    net: torch.nn.Module,
    arch: Arch | None,
    data: ImageDataset,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``arch`` (or of a static ``net`` when ``arch`` is None)."""
    return evaluate_metric(net, arch, data, ClassificationTask(), batch_size, device)
