"""The process group inside one miner's rig (one or several nodes): torch.distributed.

Gloo on CPU, NCCL on CUDA. Every process of the group trained on the same elements (scheme
1: the same K sub-networks; scheme 2: the miner's own sub-network), so an in-rig average
really is sum / world size; the masked rule only matters between miners.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from miner.distributed.config import WorkerEnv

log = logging.getLogger(__name__)


@dataclass
class RigGroup:
    """This process's handle on its rig's process group; rank 0 talks to other miners."""

    env: WorkerEnv
    device: torch.device
    group: dist.ProcessGroup | None = None

    @classmethod
    def join(cls, env: WorkerEnv, device: torch.device, timeout_s: float = 60.0) -> RigGroup:
        """Set one torch thread per worker and join the group at ``env``'s rendezvous."""
        torch.set_num_threads(max(1, env.threads))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend,
            init_method=env.init_method,
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        log.info("rig joined rank=%d world=%d backend=%s", env.rank, env.world_size, backend)
        return cls(env, device, dist.group.WORLD)

    @property
    def is_leader(self) -> bool:
        return self.env.rank == 0

    @property
    def world_size(self) -> int:
        return self.env.world_size

    def mean_(self, flat: torch.Tensor) -> torch.Tensor:
        """Average ``flat`` over the rig in place (every process holds the result)."""
        if self.world_size > 1:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            flat.div_(self.world_size)
        return flat

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` everywhere with the leader's."""
        if self.world_size > 1:
            dist.broadcast(tensor, src=src, group=self.group)
        return tensor

    def close(self) -> None:
        """Leave the group. Everyone meets at a barrier first: rank 0 hosts the rendezvous
        store, and tearing Gloo down while a peer is still talking to it aborts the process."""
        if dist.is_initialized():
            if self.world_size > 1:
                dist.barrier(group=self.group)
            dist.destroy_process_group()


def leave_and_exit(rig: RigGroup, code: int = 0) -> NoReturn:
    """Leave the group and end the worker process at once with ``code``.

    With torch 2.13 on Gloo, a worker whose group spans separately launched nodes sometimes
    aborts during interpreter shutdown ("terminate called without an active exception"),
    after all of its work and the group teardown are done; the launcher then sees a failed
    worker. Skipping interpreter teardown avoids it, so worker entry points end with this.
    """
    rig.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
