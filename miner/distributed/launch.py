"""Start the worker processes of one rig node, the way ``torchrun`` does.

:func:`worker_environ` (pure) gives each local worker the rendezvous variables
``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE`` and one thread (``OMP_NUM_THREADS``); :class:`WorkerGroup` spawns them
and watches them: when one exits with an error, the others are stopped (SIGTERM, then
SIGKILL after a grace period) and :class:`LaunchError` names the first failure. Several
nodes of one miner each run a launcher with the same ``master_addr``/``master_port`` and
their own ``node_rank`` (plain env rendezvous, no elastic agent).

``python -m miner.distributed.launch --nproc-per-node 2 script.py args...`` is the CLI form.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from miner.distributed.errors import LaunchError
from node.ports import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchConfig:
    """One node's share of a rig; ``master_port=None`` picks a free one (single node only)."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    threads_per_worker: int = 1
    grace_s: float = 5.0
    poll_s: float = 0.05
    extra_env: Mapping[str, str] = field(default_factory=dict)


def worker_environ(
    config: LaunchConfig, local_rank: int, master_port: int, base: Mapping[str, str]
) -> dict[str, str]:
    """The environment of local worker ``local_rank``: ``base`` plus the rendezvous."""
    threads = str(config.threads_per_worker)
    return {
        **base,
        **config.extra_env,
        "MASTER_ADDR": config.master_addr,
        "MASTER_PORT": str(master_port),
        "RANK": str(config.node_rank * config.nproc_per_node + local_rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(config.nnodes * config.nproc_per_node),
        "LOCAL_WORLD_SIZE": str(config.nproc_per_node),
        "GROUP_RANK": str(config.node_rank),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


class WorkerGroup:
    """The running workers of this node; stop them all if one fails."""

    def __init__(self, processes: list[subprocess.Popen[bytes]], config: LaunchConfig) -> None:
        self.processes = processes
        self.config = config

    @classmethod
    def start(
        cls, argv: Sequence[str], config: LaunchConfig, base_env: Mapping[str, str] | None = None
    ) -> WorkerGroup:
        """Spawn ``nproc_per_node`` copies of ``argv`` with their rendezvous variables."""
        if config.nproc_per_node < 1 or not 0 <= config.node_rank < config.nnodes:
            raise LaunchError(rank=-1, code=-1, detail=f": bad launch config {config}")
        if config.master_port is None and config.nnodes > 1:
            raise LaunchError(rank=-1, code=-1, detail=": several nodes need an explicit port")
        port = config.master_port or free_port(config.master_addr)
        base = dict(os.environ if base_env is None else base_env)
        processes = [
            subprocess.Popen(list(argv), env=worker_environ(config, local, port, base))
            for local in range(config.nproc_per_node)
        ]
        log.info(
            "workers started n=%d port=%d node_rank=%d", len(processes), port, config.node_rank
        )
        return cls(processes, config)

    def wait(self, timeout_s: float | None = None) -> None:
        """Return when every worker exited 0; raise :class:`LaunchError` on the first failure
        (or on ``timeout_s``, code -1) after stopping the others."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                codes = [p.poll() for p in self.processes]
                failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    local, code = failed[0]
                    raise LaunchError(rank=self._rank(local), code=int(code or 0))
                if all(c == 0 for c in codes):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise LaunchError(rank=-1, code=-1, detail=f": timed out after {timeout_s}s")
                time.sleep(self.config.poll_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM every live worker, SIGKILL what is left after the grace period."""
        live = [p for p in self.processes if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        end = time.monotonic() + self.config.grace_s
        for p in live:
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _rank(self, local_rank: int) -> int:
        return self.config.node_rank * self.config.nproc_per_node + local_rank


def launch(argv: Sequence[str], config: LaunchConfig, timeout_s: float | None = None) -> None:
    """Start the workers and wait for them (see :meth:`WorkerGroup.wait`)."""
    WorkerGroup.start(argv, config).wait(timeout_s)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miner.distributed.launch")
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=None)
    parser.add_argument("script")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    config = LaunchConfig(
        nproc_per_node=ns.nproc_per_node,
        nnodes=ns.nnodes,
        node_rank=ns.node_rank,
        master_addr=ns.master_addr,
        master_port=ns.master_port,
    )
    logging.basicConfig(level=logging.INFO)
    try:
        launch([sys.executable, ns.script, *ns.script_args], config)
    except LaunchError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return exc.code if exc.code > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
