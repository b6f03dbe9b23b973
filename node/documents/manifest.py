"""The ResultManifest: what a group delivers, and the ``resultRoot`` that commits to it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from node.documents.canonical import canonical_bytes, check_hash, keccak_hex
from node.errors import SpecError

Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]


class Metrics(BaseModel):
    """Measured on the miner's validation split; ``accuracy`` (a fraction) for a
    classification task, ``epe`` (end-point error, in pixels) for a stereo task; the other
    one is None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float | None = Field(None, ge=0.0, le=1.0)
    epe: float | None = Field(None, ge=0.0)
    flops: int = Field(ge=0)
    params: int = Field(ge=0)
    latency_ms: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _one_task_metric(self) -> Metrics:
        if (self.accuracy is None) == (self.epe is None):
            raise ValueError("give exactly one of 'accuracy' (classification) or 'epe' (stereo)")
        return self


class ParetoPoint(BaseModel):
    """A sub-network and its costs. ``score`` is higher-is-better whatever the task: the
    accuracy for classification, the negated EPE (−px) for stereo, as the search ranks them
    (so a front sorts the same way for both kinds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: dict[str, Any]
    score: float
    flops: int = Field(ge=0)
    params: int | None = Field(None, ge=0)
    latency_ms: float | None = None


class ResultManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    task_id: int = Field(ge=1)
    spec_hash: Hex32
    arch: dict[str, Any]
    weights_sha256: Hex32
    arch_json_sha256: Hex32
    metrics: Metrics
    pareto_front: tuple[ParetoPoint, ...]
    training_log_sha256: Hex32
    group: tuple[Address, ...]
    shares_wei: tuple[int, ...]
    # the largest sub-network (the full supernet), measured like the chosen one: what the
    # constraint cost in accuracy. Optional, and left out of the canonical JSON when absent,
    # so manifests written before it existed keep their result root.
    largest: ParetoPoint | None = None

    @model_validator(mode="after")
    def _group_and_shares(self) -> ResultManifest:
        if not self.group:
            raise ValueError("group must name at least the leader")
        if len(self.group) != len(self.shares_wei):
            raise ValueError("one share per group member")
        if any(s < 0 for s in self.shares_wei):
            raise ValueError("shares must be non-negative wei")
        if len({a.lower() for a in self.group}) != len(self.group):
            raise ValueError("group members must be distinct")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_largest(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("largest", 0) is None:
            del data["largest"]
        return data

    def canonical(self) -> bytes:
        return canonical_bytes(self)

    def result_root(self) -> str:
        """``0x`` keccak256 of the canonical JSON: the ``resultRoot`` submitted on chain."""
        return keccak_hex(self.canonical())


def parse_manifest_checked(raw: bytes, expected_root: str) -> ResultManifest:
    """Parse manifest bytes from outside, refusing them unless they hash to ``expected_root``."""
    import json

    check_hash("result manifest", expected_root, keccak_hex(raw))
    try:
        manifest = ResultManifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise SpecError(f"invalid result manifest: {exc}") from exc
    check_hash("result manifest (canonical)", expected_root, manifest.result_root())
    return manifest
