"""Experiment settings for supernet training: frozen pydantic models, loadable from TOML.

Progressive shrinking is data: :class:`TrainConfig.phases` is a list of :class:`PhaseConfig`
(full -> kernel -> depth -> width by default), each saying which choices of the search
space it samples from. A choice list left out takes the phase's default: the dimensions
the phase has made elastic so far get every value, the others only their largest.
Resolution is elastic in every phase.

:meth:`TrainConfig.config_hash` names a run; a checkpoint made under one hash refuses to
resume under another.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from miner.automl.space import SearchSpace
from node.errors import ConfigError

PhaseName = Literal["full", "kernel", "depth", "width"]

# Which dimensions each phase makes elastic by default (cumulative, as in once-for-all).
_ELASTIC_BY_PHASE: dict[str, frozenset[str]] = {
    "full": frozenset(),
    "kernel": frozenset({"kernel_sizes"}),
    "depth": frozenset({"kernel_sizes", "depths"}),
    "width": frozenset({"kernel_sizes", "depths", "expand_ratios"}),
}


class PhaseConfig(BaseModel):
    """One stage of progressive shrinking.

    ``kernel_sizes`` / ``expand_ratios`` / ``depths`` / ``resolutions``: the values this phase
    samples; ``None`` takes the phase default (see the module docstring). ``steps`` overrides
    ``epochs`` when set (short runs, tests).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PhaseName
    epochs: float = Field(default=1.0, gt=0)
    steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.05, gt=0)
    subnets_per_step: int = Field(default=4, ge=1)
    kernel_sizes: tuple[int, ...] | None = None
    expand_ratios: tuple[float, ...] | None = None
    depths: tuple[int, ...] | None = None
    resolutions: tuple[int, ...] | None = None

    def space(self, full: SearchSpace) -> SearchSpace:
        """The sub-space of ``full`` this phase samples from (ArchError if outside it)."""
        elastic = _ELASTIC_BY_PHASE[self.name]
        choices: dict[str, tuple[Any, ...]] = {}
        for dim in ("kernel_sizes", "expand_ratios", "depths"):
            given = getattr(self, dim)
            values = getattr(full, dim)
            choices[dim] = (
                tuple(sorted(given))
                if given
                else (tuple(values) if dim in elastic else (values[-1],))
            )
        choices["resolutions"] = tuple(sorted(self.resolutions or full.resolutions))
        return full.restrict(**choices)


def progressive_shrinking(
    epochs: tuple[float, float, float, float] = (2, 1, 1, 1),
    lrs: tuple[float, float, float, float] = (0.05, 0.02, 0.02, 0.02),
    subnets_per_step: int = 4,
) -> tuple[PhaseConfig, ...]:
    """The default schedule: full net (one sub-network per step), then kernel, depth, width."""
    names: tuple[PhaseName, ...] = ("full", "kernel", "depth", "width")
    return tuple(
        PhaseConfig(
            name=n, epochs=e, lr=lr, subnets_per_step=1 if n == "full" else subnets_per_step
        )
        for n, e, lr in zip(names, epochs, lrs, strict=True)
    )


class TrainConfig(BaseModel):
    """Everything that decides a training run's result (and so its config hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    supernet: str = "ofa_mbv3_tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "synthetic"
    synthetic_size: int = Field(default=512, ge=8)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    batch_size: int = Field(default=64, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    seed: int = Field(default=0, ge=0)
    phases: tuple[PhaseConfig, ...] = Field(default_factory=progressive_shrinking)
    sandwich: bool = True
    distill_weight: float = Field(default=1.0, ge=0)
    distill_temperature: float = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=4e-5, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    optimizer: Literal["sgd", "adamw"] = "sgd"
    # stereo only: per-scale loss weights (coarsest first) as (progress, weights) points;
    # empty takes the default coarse-to-fine schedule
    scale_schedule: tuple[tuple[float, tuple[float, ...]], ...] = ()
    checkpoint_every_steps: int = Field(default=50, ge=1)

    @model_validator(mode="after")
    def _phases_present(self) -> TrainConfig:
        if not self.phases:
            raise ValueError("at least one phase is needed")
        if self.scale_schedule:
            from miner.automl.stereo.loss import ScaleSchedule

            ScaleSchedule(self.scale_schedule)  # ValueError names what is wrong
        return self

    def config_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of every field that can change the weights
        (checkpoint frequency and evaluation batch size do not)."""
        fields = self.model_dump(mode="json", exclude={"checkpoint_every_steps", "eval_batch_size"})
        for name, default in _HASH_NEUTRAL_DEFAULTS.items():  # older runs keep their hash
            if fields.get(name) == default:
                del fields[name]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "scale_schedule": []}


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_train_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a mapping (e.g. parsed TOML); ConfigError names every offending field."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_field_errors(exc)}") from exc


def load_train_config(path: Path) -> TrainConfig:
    """Read a TOML training spec. Top-level keys are :class:`TrainConfig` fields; phases are
    ``[[phases]]`` tables; supernet overrides go in ``[overrides]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_train_config(data, str(path))
