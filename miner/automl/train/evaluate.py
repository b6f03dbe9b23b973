"""Accuracy of one sub-network on a labelled set (after BN recalibration, typically)."""

from __future__ import annotations

import torch

from miner.automl.data import ImageDataset, iterate_once, resize_batch
from miner.automl.space import Arch


@torch.no_grad()
def evaluate_accuracy(
    net: torch.nn.Module,
    arch: Arch | None,
    data: ImageDataset,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``arch`` (or of a static ``net`` when ``arch`` is None).

    Runs in eval mode; the module's train/eval mode is restored afterwards.
    """
    was_training = net.training
    if arch is not None:
        net.set_active(arch)  # type: ignore[operator]
    net.eval()
    correct = 0
    try:
        for x, y in iterate_once(data, batch_size):
            if device is not None:
                x, y = x.to(device), y.to(device)
            if arch is not None:
                x = resize_batch(x, arch.resolution)
            correct += int((net(x).argmax(dim=1) == y).sum())
    finally:
        net.train(was_training)
    return correct / len(data)
