"""What a worker process learns from its launcher, read from one environment mapping.

The launcher (:mod:`miner.distributed.launch`) sets the torchrun variables; this is the only
place in the package that reads them, and it reads the mapping it is given (the entry point
passes ``os.environ``), so library code never touches process-wide state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from node.errors import ConfigError


@dataclass(frozen=True)
class WorkerEnv:
    """One worker's place in its rig: global and local rank, world size, rendezvous."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    threads: int = 1

    @property
    def init_method(self) -> str:
        return f"tcp://{self.master_addr}:{self.master_port}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerEnv:
        """Parse the torchrun variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...)."""
        try:
            env = cls(
                rank=int(environ["RANK"]),
                local_rank=int(environ.get("LOCAL_RANK", environ["RANK"])),
                world_size=int(environ["WORLD_SIZE"]),
                local_world_size=int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])),
                master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
                master_port=int(environ["MASTER_PORT"]),
                threads=int(environ.get("OMP_NUM_THREADS", "1")),
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"worker environment incomplete or malformed: {exc!r}") from exc
        if not 0 <= env.rank < env.world_size or not 0 <= env.local_rank < env.local_world_size:
            raise ConfigError(f"rank {env.rank}/{env.local_rank} outside world {env.world_size}")
        return env
