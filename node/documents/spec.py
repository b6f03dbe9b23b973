"""The TaskSpec: what a client asks the miners to do.

The spec's sha256 over its canonical JSON is the ``specHash`` stored on chain; miners check
it before they claim. Experiment settings are frozen models so that a spec, once hashed,
cannot change under anyone's feet.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.documents.canonical import canonical_bytes, check_hash, sha256_hex
from node.errors import SpecError

#: Built-in stereo sets (rendered by the miners, not stored); the others are images.
STEREO_DATASETS = ("procedural-stereo",)
BUILTIN_DATASETS = ("animal-mnist", "digits", "synthetic", *STEREO_DATASETS)
Sha256Hex = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetRef(_Frozen):
    """A built-in dataset by name, or a file at a URL pinned by its sha256."""

    name: str | None = None
    url: str | None = None
    sha256: Sha256Hex | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetRef:
        if (self.name is None) == (self.url is None):
            raise ValueError("give exactly one of 'name' (a built-in dataset) or 'url'")
        if self.name is not None and self.name not in BUILTIN_DATASETS:
            raise ValueError(f"unknown built-in dataset {self.name!r}; allowed: {BUILTIN_DATASETS}")
        if self.url is not None:
            if self.sha256 is None:
                raise ValueError("a dataset given by 'url' needs its 'sha256'")
            if not re.match(r"^https?://", self.url):
                raise ValueError("dataset 'url' must be http(s)")
        return self


class SearchSpaceSpec(_Frozen):
    """The elastic dimensions of the supernet."""

    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[float, ...] = (3.0, 4.0, 6.0)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = (224,)

    @field_validator("kernel_sizes", "expand_ratios", "depths", "resolutions")
    @classmethod
    def _sorted_unique(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values or list(values) != sorted(set(values)) or min(values) <= 0:
            raise ValueError("must be positive, non-empty, sorted and without repeats")
        return values

    @field_validator("kernel_sizes")
    @classmethod
    def _odd_kernels(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(k % 2 == 0 for k in values):
            raise ValueError("kernel sizes must be odd")
        return values


class PhaseBudget(_Frozen):
    """One phase of progressive shrinking."""

    name: Literal["full", "kernel", "depth", "width"]
    epochs: int = Field(ge=1, le=10_000)
    lr: float = Field(gt=0.0, le=10.0)
    subnets_per_step: int = Field(4, ge=1, le=64)


class TrainingBudget(_Frozen):
    supernet: str = "ofa_mbv3_tiny"
    batch_size: int = Field(64, ge=1, le=65_536)
    phases: tuple[PhaseBudget, ...] = (
        PhaseBudget(name="full", epochs=1, lr=0.05),
        PhaseBudget(name="kernel", epochs=1, lr=0.02),
        PhaseBudget(name="depth", epochs=1, lr=0.02),
        PhaseBudget(name="width", epochs=1, lr=0.02),
    )
    sandwich: bool = False
    distill_weight: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("phases")
    @classmethod
    def _phase_order(cls, phases: tuple[PhaseBudget, ...]) -> tuple[PhaseBudget, ...]:
        order = ["full", "kernel", "depth", "width"]
        names = [p.name for p in phases]
        if not names or names != sorted(names, key=order.index) or len(set(names)) != len(names):
            raise ValueError(f"phases must be a non-empty subsequence of {order}, got {names}")
        return phases


class DistributedSpec(_Frozen):
    scheme: Literal["data_parallel", "per_node_subnets"] = "data_parallel"
    subnets_per_step: int = Field(4, ge=1, le=64)
    compression: Literal["none", "bf16", "int8"] = "none"
    round_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)


class Constraint(_Frozen):
    """Limits the chosen sub-network must meet; at least one is required."""

    max_flops: int | None = Field(None, gt=0)
    max_params: int | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0.0)
    device_profile: str | None = None

    @model_validator(mode="after")
    def _something(self) -> Constraint:
        if self.max_flops is None and self.max_params is None and self.max_latency_ms is None:
            raise ValueError("set at least one of max_flops, max_params, max_latency_ms")
        if self.max_latency_ms is not None and not self.device_profile:
            raise ValueError("max_latency_ms needs a device_profile naming the device")
        return self


class TaskSpec(_Frozen):
    """The whole off-chain description of a task."""

    version: Literal[1] = 1
    kind: Literal["classification", "stereo"]
    dataset: DatasetRef
    search_space: SearchSpaceSpec = SearchSpaceSpec()
    training: TrainingBudget = TrainingBudget()
    distributed: DistributedSpec = DistributedSpec()
    constraint: Constraint
    objective: Literal["max_accuracy", "min_epe"] = "max_accuracy"
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _objective_fits_kind(self) -> TaskSpec:
        want = {"classification": "max_accuracy", "stereo": "min_epe"}[self.kind]
        if self.objective != want:
            raise ValueError(f"objective for kind {self.kind!r} must be {want!r}")
        return self

    def canonical(self) -> bytes:
        return canonical_bytes(self)

    def spec_hash(self) -> str:
        """``0x`` sha256 of the canonical JSON: the ``specHash`` on chain."""
        return sha256_hex(self.canonical())


def parse_spec(data: dict[str, object]) -> TaskSpec:
    """Validate ``data`` into a TaskSpec; errors name each bad field and what is allowed."""
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SpecError(f"invalid task spec: {problems}") from exc


def parse_spec_checked(raw: bytes, expected_hash: str) -> TaskSpec:
    """Parse spec bytes fetched from outside, refusing them unless their hash is ``expected_hash``.

    The hash is checked over the bytes as received and again over the canonical re-encoding,
    so a spec that parses but is not in canonical form is refused too.
    """
    import json

    check_hash("task spec", expected_hash, sha256_hex(raw))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SpecError(f"task spec is not JSON: {exc}") from exc
    spec = parse_spec(data)
    check_hash("task spec (canonical)", expected_hash, spec.spec_hash())
    return spec
