"""Process settings of the miner daemon (``manta-miner``).

Built on :mod:`node.config`: the ``[chain]``, ``[identity]`` and ``[indexer]`` sections are
the same models as ``manta-node``'s, and the miner adds ``[http]``, ``[policy]``,
``[capacity]`` and ``[tx]``. Precedence, highest first:

1. values passed to :func:`load_miner_settings` (what the command line parsed);
2. environment variables ``MANTA_<FIELD>``, nested with ``__``
   (``MANTA_CAPACITY__GPUS=2``, ``MANTA_POLICY__KINDS='["classification"]'``);
3. a TOML file (``config_file`` argument or ``MANTA_CONFIG_FILE``), one table per section;
4. the defaults below.

Everything the daemon writes lives under ``data_dir`` (:class:`MinerPaths`). Passwords are
never settings, only where one comes from (``identity.password_env`` / ``password_file``).

A *compute unit* (used by ``policy.min_reward_wei_per_unit`` and ``capacity.units_per_hour``)
is one epoch of one sampled sub-network at resolution 224; see :mod:`miner.daemon.policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.chain.models import checksum_address
from node.config import (
    ChainSettings,
    IdentitySettings,
    IndexerSettings,
    MantaSettings,
    load_settings_as,
)
from node.errors import ConfigError

TaskKind = Literal["classification", "stereo"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpSettings(_Section):
    """The miner's HTTP server and the endpoint it announces on chain."""

    host: str = "127.0.0.1"
    port: int = Field(8700, ge=0, le=65535)
    public_url: str | None = None
    sse_queue_size: int = Field(256, ge=1, le=65_536)
    sse_keepalive_s: float = Field(15.0, gt=0)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/") if value else value

    def endpoint(self) -> str:
        """The URL peers and clients use: ``public_url``, else ``http://host:port``."""
        return self.public_url or f"http://{self.host}:{self.port}"


class PolicySettings(_Section):
    """What the daemon is willing to claim (see :func:`miner.daemon.policy.decide`)."""

    kinds: tuple[TaskKind, ...] = ("classification",)
    min_reward_wei_per_unit: int = Field(0, ge=0)
    max_bond_wei: int | None = Field(None, ge=0)
    tokens: tuple[str, ...] = ()  # accepted reward tokens; empty = any (zero address = native)
    time_margin: float = Field(1.5, ge=1.0)  # estimated time × margin must fit the work window
    min_claim_time_left_s: int = Field(5, ge=0)
    # The arbiters this miner trusts to rule on a dispute of its work; a task naming any other
    # is refused. Empty (the default) trusts none: a client's own arbiter could take every
    # bond of the group, so the operator must choose.
    arbiters: tuple[str, ...] = ()
    # A member left out of a submitted result has until the end of the review window to endorse
    # it or check in; a shorter window than this leaves the daemon no time to do so.
    min_review_window_s: int = Field(60, ge=0)
    # Bond × slots × this must not exceed the reward: the bond at risk stays in proportion to
    # what the miner can earn (the contract's own floor is reward / (10 × slots)).
    max_bond_share: float = Field(1.0, gt=0)
    # Once a strict majority signed a result, how long the leader waits for the other members'
    # signatures before it submits without them (they get no share).
    quorum_wait_s: float = Field(120.0, ge=0)

    @field_validator("arbiters")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(checksum_address(a) for a in value)


class CapacitySettings(_Section):
    """The rig: accelerators, memory, throughput and how many tasks at once."""

    gpus: int = Field(0, ge=0, le=1024)
    memory_gib: float = Field(8.0, gt=0)
    units_per_hour: float = Field(60.0, gt=0)
    max_concurrent_tasks: int = Field(1, ge=1, le=64)


class TxSettings(_Section):
    """Transaction policy of the daemon's sender."""

    gas_cap: int = Field(3_000_000, ge=21_000)
    receipt_timeout_s: float = Field(180.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0)


@dataclass(frozen=True)
class MinerPaths:
    """Where the daemon keeps its files, all under ``data_dir``."""

    data_dir: Path
    cursor_file: Path

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.sqlite"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def datasets_dir(self) -> Path:
        """Datasets fetched by URL, under their sha256 (what the training side reads)."""
        return self.data_dir / "datasets"

    def task_dir(self, task_id: int) -> Path:
        return self.data_dir / "tasks" / str(task_id)

    def progress_file(self, task_id: int) -> Path:
        """The JSON-lines file the training subprocess appends to (see ``progress``)."""
        return self.task_dir(task_id) / "progress.jsonl"


class MinerSettings(MantaSettings):
    """Every process setting of ``manta-miner``; see the module docstring for precedence."""

    log_level: str = "WARNING"
    data_dir: Path = Path(".manta") / "miner"
    chain: ChainSettings = Field(default_factory=ChainSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    tx: TxSettings = Field(default_factory=TxSettings)

    def paths(self) -> MinerPaths:
        """The daemon's files; the indexer cursor goes under ``data_dir`` unless set."""
        explicit = "cursor_db" in self.indexer.model_fields_set
        cursor = self.indexer.cursor_db if explicit else self.data_dir / "indexer.sqlite"
        return MinerPaths(data_dir=self.data_dir, cursor_file=cursor)


def load_miner_settings(config_file: Path | None = None, **overrides: Any) -> MinerSettings:
    """Settings from overrides, environment, TOML file and defaults (in that order).

    ``overrides`` are nested dicts per section (``capacity={"gpus": 2}``); ``None`` values
    are dropped so a CLI can pass every option. Invalid values raise :class:`ConfigError`.
    """
    return load_settings_as(MinerSettings, config_file, **overrides)


# ---- writing a config file (``manta-miner init``) --------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def settings_toml(settings: MinerSettings) -> str:
    """``settings`` as a TOML file that :func:`load_miner_settings` reads back identically.

    Only values that differ from the defaults are written (``init`` sets the ones an
    operator edits); ``config_file`` is not written.
    """
    data = settings.model_dump(
        mode="json", exclude={"config_file"}, exclude_none=True, exclude_defaults=True
    )
    top = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    lines = [*top, ""]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
    return "\n".join(lines)
