"""Canonical JSON, TaskSpec validation and hashing, ResultManifest roots."""

from __future__ import annotations

import json

import pytest

from node.documents.canonical import HashMismatch, canonical_bytes, keccak_hex, sha256_hex
from node.documents.manifest import ResultManifest, parse_manifest_checked
from node.documents.spec import parse_spec, parse_spec_checked
from node.errors import SpecError

SPEC = {
    "kind": "classification",
    "dataset": {"name": "animal-mnist"},
    "search_space": {"resolutions": [28]},
    "constraint": {"max_flops": 5_000_000},
    "seed": 3,
}


def test_canonical_bytes_sort_keys_and_drop_whitespace() -> None:
    assert canonical_bytes({"b": 1, "a": [1, 2, {"d": 0, "c": 1.5}]}) == (
        b'{"a":[1,2,{"c":1.5,"d":0}],"b":1}'
    )


def test_canonical_bytes_refuse_nan() -> None:
    with pytest.raises(SpecError):
        canonical_bytes({"x": float("nan")})


def test_spec_hash_is_stable_and_order_independent() -> None:
    spec = parse_spec(SPEC)
    reordered = parse_spec(dict(reversed(list(SPEC.items()))))
    assert spec.spec_hash() == reordered.spec_hash() == sha256_hex(spec.canonical())
    assert parse_spec({**SPEC, "seed": 4}).spec_hash() != spec.spec_hash()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "regression"}, "kind"),
        ({"dataset": {"name": "imagenet"}}, "dataset"),
        ({"dataset": {"url": "https://example.org/x.npz"}}, "dataset"),
        ({"constraint": {}}, "constraint"),
        ({"search_space": {"kernel_sizes": [4]}}, "search_space.kernel_sizes"),
        ({"objective": "min_epe"}, "spec"),
        ({"training": {"phases": [{"name": "width", "epochs": 1, "lr": 0.1},
                                  {"name": "full", "epochs": 1, "lr": 0.1}]}}, "training.phases"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_spec_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**SPEC, **change})
    assert field in str(info.value)


def test_spec_from_outside_is_checked_against_its_hash() -> None:
    spec = parse_spec(SPEC)
    raw = spec.canonical()
    assert parse_spec_checked(raw, spec.spec_hash()) == spec
    with pytest.raises(HashMismatch):
        parse_spec_checked(raw.replace(b'"seed":3', b'"seed":4'), spec.spec_hash())
    pretty = json.dumps(json.loads(raw), indent=2).encode()
    with pytest.raises(HashMismatch):
        parse_spec_checked(pretty, sha256_hex(pretty))


def _manifest(**change: object) -> ResultManifest:
    data = {
        "task_id": 1,
        "spec_hash": "0x" + "11" * 32,
        "arch": {"depth": [2, 2]},
        "weights_sha256": "0x" + "22" * 32,
        "arch_json_sha256": "0x" + "33" * 32,
        "metrics": {"accuracy": 0.9, "flops": 1000, "params": 10},
        "pareto_front": [{"arch": {"depth": [2, 2]}, "score": 0.9, "flops": 1000}],
        "training_log_sha256": "0x" + "44" * 32,
        "group": ["0x" + "aa" * 20, "0x" + "bb" * 20],
        "shares_wei": [6, 4],
    }
    return ResultManifest.model_validate({**data, **change})


def test_manifest_root_is_keccak_of_canonical_and_checked() -> None:
    manifest = _manifest()
    root = manifest.result_root()
    assert root == keccak_hex(canonical_bytes(manifest))
    assert parse_manifest_checked(manifest.canonical(), root) == manifest
    with pytest.raises(HashMismatch):
        parse_manifest_checked(_manifest(shares_wei=[5, 5]).canonical(), root)


@pytest.mark.parametrize(
    "change",
    [{"shares_wei": [1]}, {"group": []}, {"shares_wei": [-1, 11]},
     {"group": ["0x" + "aa" * 20, "0x" + "AA" * 20]}, {"weights_sha256": "0x12"}],
)
def test_manifest_refuses_inconsistent_groups_and_hashes(change: dict) -> None:
    with pytest.raises(ValueError):
        _manifest(**change)


def test_manifest_largest_network_is_optional_and_keeps_old_roots() -> None:
    plain = _manifest()
    # a manifest written before the field existed hashes as it did: no "largest" key at all
    assert b"largest" not in plain.canonical()
    assert parse_manifest_checked(plain.canonical(), plain.result_root()).largest is None
    largest = {"arch": {"depth": [4, 4]}, "score": 0.95, "flops": 5000, "params": 20}
    full = _manifest(largest=largest)
    assert full.result_root() != plain.result_root()
    again = parse_manifest_checked(full.canonical(), full.result_root())
    assert again.largest is not None and again.largest.flops == 5000
    with pytest.raises(ValueError):
        _manifest(largest={**largest, "flops": -1})


def test_classification_metrics_keep_their_canonical_form() -> None:
    # "epe" has been in Metrics from the start (as null): classification roots are unchanged
    assert b'"metrics":{"accuracy":0.9,"epe":null,"flops":1000,"latency_ms":null,"params":10}' \
        in _manifest().canonical()


def test_stereo_manifest_reports_epe_and_negated_scores() -> None:
    stereo = _manifest(metrics={"epe": 1.25, "flops": 1000, "params": 10},
                       pareto_front=[{"arch": {"depth": [2, 2]}, "score": -1.25, "flops": 1000}],
                       largest={"arch": {"depth": [4, 4]}, "score": -1.0, "flops": 5000})
    again = parse_manifest_checked(stereo.canonical(), stereo.result_root())
    assert again.metrics.epe == 1.25 and again.metrics.accuracy is None
    assert again.largest is not None and again.largest.score == -1.0


@pytest.mark.parametrize("metrics", [
    {"flops": 1, "params": 1},  # no task metric
    {"accuracy": 0.5, "epe": 1.0, "flops": 1, "params": 1},  # two task kinds at once
    {"epe": -0.1, "flops": 1, "params": 1},
])
def test_metrics_need_exactly_one_valid_task_metric(metrics: dict) -> None:
    with pytest.raises(ValueError):
        _manifest(metrics=metrics)
