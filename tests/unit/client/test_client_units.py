"""Pure pieces of the client: amounts, durations, SSE parsing, safetensors headers, specs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from client.errors import BadAmount, BadDuration, SpecFileError
from client.specs import load_spec_file, publish_spec, spec_uri
from client.transfer import parse_sse_lines
from client.units import format_wei, parse_amount_wei, parse_duration_s
from client.verify import count_weight_params, safetensors_shapes
from node.errors import SpecError

SPEC_TOML = """
kind = "classification"
[dataset]
name = "digits"
[constraint]
max_flops = 1000000
"""


@pytest.mark.parametrize(("text", "wei"), [
    ("0.5eth", 5 * 10**17), ("500gwei", 500 * 10**9), ("12wei", 12), ("1000", 1000),
    ("1ETH", 10**18), (" 2 ether ", 2 * 10**18), ("0.000000001eth", 10**9), (".5eth", 5 * 10**17),
    ("123456789012345678901234567890", 123456789012345678901234567890),
])
def test_amounts_are_exact_wei(text: str, wei: int) -> None:
    value = parse_amount_wei(text)
    assert value == wei and isinstance(value, int)


@pytest.mark.parametrize(("text", "fragment"), [
    ("1.5wei", "whole number"), ("0.5btc", "unknown unit"), ("-1eth", "expected a number"),
    ("", "expected a number"), ("1e18", "expected a number"), ("0.1234567891234gwei", "whole"),
])
def test_bad_amounts_say_why(text: str, fragment: str) -> None:
    with pytest.raises(BadAmount, match=fragment):
        parse_amount_wei(text)


def test_durations() -> None:
    assert [parse_duration_s(t) for t in ("90", "90s", "30m", "2h", "1d")] == [
        90, 90, 1800, 7200, 86400]
    with pytest.raises(BadDuration):
        parse_duration_s("1.5h")


def test_format_wei_is_exact() -> None:
    assert format_wei(1_500_000_000_000_000_001) == "1.500000000000000001 ETH"
    assert format_wei(2 * 10**18) == "2 ETH"


def test_sse_parser_joins_data_and_skips_comments() -> None:
    lines = ["event: snapshot", 'data: {"step": 1}', "", ": keepalive", "",
             "id: 7", "event: progress", "data: {\"a\":", "data: 2}", "", "event: partial"]
    events = parse_sse_lines(lines)
    assert [e.event for e in events] == ["snapshot", "progress"]
    assert events[0].json() == {"step": 1}
    assert events[1].id == "7" and events[1].data == '{"a":\n2}'


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_params_from_safetensors_header_skip_bn_buffers(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    _safetensors(path, {"conv.weight": [8, 3, 3, 3], "bn.weight": [8], "bn.running_mean": [8],
                        "bn.running_var": [8], "bn.num_batches_tracked": [], "fc.bias": [10]})
    shapes = safetensors_shapes(path)
    assert shapes["conv.weight"] == (8, 3, 3, 3)
    assert count_weight_params(shapes) == 8 * 27 + 8 + 10


def test_spec_file_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC_TOML.replace('"classification"', '"regression"'))
    with pytest.raises(SpecError, match="kind") as info:
        load_spec_file(bad)
    assert "classification" in str(info.value)  # the allowed values are named
    broken = tmp_path / "broken.toml"
    broken.write_text("kind = ")
    with pytest.raises(SpecFileError, match="not valid toml"):
        load_spec_file(broken)
    with pytest.raises(SpecFileError, match="No such file"):
        load_spec_file(tmp_path / "missing.toml")


def test_publish_writes_canonical_bytes_under_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC_TOML)
    spec = load_spec_file(path)
    published = publish_spec(spec, tmp_path / "store")
    assert published.created and published.path.read_bytes() == spec.canonical()
    assert published.path.name == spec.spec_hash()[2:] + ".json"
    assert published.uri.startswith("file://") and published.uri.endswith(published.path.name)
    assert not publish_spec(spec, tmp_path / "store").created
    assert spec_uri(spec, tmp_path, "http://h:1/specs/") == f"http://h:1/specs/{published.path.name}"


def test_watch_view_merges_partial_progress_events() -> None:
    from client.models import WatchUpdate
    from client.render import WatchView

    view = WatchView(3)
    member = "0x" + "12" * 20
    for data in ({"phase": "training", "step": 4, "total_steps": 10}, {"eta_s": 5.0}):
        view.update(WatchUpdate(kind="progress", task_id=3, member=member, data=data))
    bar = view.progress.tasks[0]
    assert (bar.completed, bar.total) == (4, 10) and "eta_s=5.0" in bar.fields["info"]
