"""Process settings of ``manta-node`` (and the library pieces it wires), from one place.

This is the only module that reads the environment. Precedence, highest first:

1. values passed to :func:`load_settings` (what the command line parsed);
2. environment variables ``MANTA_<FIELD>``, nested with ``__``
   (``MANTA_CHAIN__RPC_URLS='["http://…"]'``, ``MANTA_INDEXER__CONFIRMATIONS=3``);
3. a TOML file, if one is named (``config_file`` argument or ``MANTA_CONFIG_FILE``), with
   one table per section (``[chain]``, ``[identity]``, ``[devnet]``, ``[indexer]``);
4. the defaults below.

Settings are built at the entry point and passed down; nothing here runs at import.
Passwords are never settings: only *where* a password comes from is (``password_env``,
``password_file``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from node.errors import ConfigError

CONFIG_FILE_VAR = "MANTA_CONFIG_FILE"
DEFAULT_STATE_DIR = Path(".manta")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChainSettings(_Section):
    """How to reach the chain and where the deployment file is."""

    rpc_urls: list[str] = Field(default_factory=list)
    chain_id: int | None = None
    timeout_s: float = Field(10.0, gt=0)
    deployment_file: Path = DEFAULT_STATE_DIR / "deployment.json"


class IdentitySettings(_Section):
    """Where keystores live, which one to use, and where its password comes from."""

    keystore_dir: Path = DEFAULT_STATE_DIR / "keystores"
    keystore: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    kdf: Literal["scrypt", "pbkdf2"] = "scrypt"
    kdf_work: int = Field(2**18, ge=1)

    @model_validator(mode="after")
    def _one_password_source(self) -> IdentitySettings:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set password_env or password_file, not both")
        return self


class DevnetSettings(_Section):
    """The local anvil devnet (``manta-node devnet`` / ``demo``)."""

    anvil_path: Path = Path("node_modules/.bin/anvil")
    port: int = Field(0, ge=0, le=65535)
    block_time_s: int | None = Field(None, ge=1)
    accounts: int = Field(10, ge=2, le=100)
    chain_id: int = 31337
    folder: Path = DEFAULT_STATE_DIR / "devnet"
    mint_wei: int = Field(10**24, ge=0)
    startup_timeout_s: float = Field(15.0, gt=0)


class IndexerSettings(_Section):
    """The event indexer: confirmations, polling and the cursor file."""

    confirmations: int = Field(1, ge=1)
    poll_interval_s: float = Field(1.0, gt=0)
    reorg_window_blocks: int = Field(64, ge=1)
    max_range_blocks: int = Field(1000, ge=1)
    cursor_db: Path = DEFAULT_STATE_DIR / "indexer.sqlite"

    @model_validator(mode="after")
    def _window_covers_confirmations(self) -> IndexerSettings:
        if self.reorg_window_blocks < self.confirmations:
            raise ValueError("reorg_window_blocks must be >= confirmations")
        return self


S = TypeVar("S", bound="MantaSettings")


class MantaSettings(BaseSettings):
    """Base of every process's settings: ``MANTA_`` environment variables nested with ``__``,
    then an optional TOML file, then defaults (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="MANTA_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file(init_settings)
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class NodeSettings(MantaSettings):
    """Every process setting of ``manta-node``; see the module docstring for precedence."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    chain: ChainSettings = Field(default_factory=ChainSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    devnet: DevnetSettings = Field(default_factory=DevnetSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def _config_file(init_settings: PydanticBaseSettingsSource) -> Path | None:
    explicit = None
    if isinstance(init_settings, InitSettingsSource):
        explicit = init_settings.init_kwargs.get("config_file")
    raw = explicit or os.environ.get(CONFIG_FILE_VAR)
    return Path(raw) if raw else None


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def load_settings_as(
    settings_cls: type[S], config_file: Path | None = None, **overrides: Any
) -> S:
    """``settings_cls`` from overrides, environment, TOML file and defaults (in that order).

    ``overrides`` are nested dicts per section; ``None`` values are dropped, so a CLI can
    pass every option and only the given ones count. Invalid values raise
    :class:`ConfigError` naming the field.
    """
    kwargs = _drop_none(overrides)
    if config_file is not None:
        kwargs["config_file"] = config_file
    try:
        return settings_cls(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from exc


def load_settings(config_file: Path | None = None, **overrides: Any) -> NodeSettings:
    """Settings from overrides, environment, TOML file and defaults (in that order).

    ``overrides`` are nested dicts per section (``chain={"rpc_urls": [...]}``); ``None``
    values are dropped, so a CLI can pass every option and only the given ones count.
    Invalid values raise :class:`ConfigError` naming the field.
    """
    return load_settings_as(NodeSettings, config_file, **overrides)


def environment() -> Mapping[str, str]:
    """A snapshot of the process environment (for password sources named by the user)."""
    return dict(os.environ)
