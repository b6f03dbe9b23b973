"""Task specs on the client side: read a SPEC.toml (or .json), validate it, publish it.

Publishing writes the spec's canonical JSON to a local spec store, a folder of
``<sha256 hex>.json`` files, and returns the URI that goes on chain with the task: the
store's public base URL (served by ``manta data serve``) when one is given, else a
``file://`` URI (enough for miners on the same machine, as in tests and the devnet).
The hash miners check is the sha256 of exactly the bytes written.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from client.errors import SpecFileError
from node.documents.spec import TaskSpec, parse_spec


@dataclass(frozen=True)
class PublishedSpec:
    """Where a spec went: the file in the store and the URI announced on chain."""

    path: Path
    uri: str
    created: bool


def load_spec_file(path: Path) -> TaskSpec:
    """Read and validate a spec; errors name the file, the field and what is allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(path=str(path), reason=exc.strerror or str(exc)) from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = path.suffix[1:] or "toml"
        raise SpecFileError(path=str(path), reason=f"not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecFileError(path=str(path), reason="top level must be a table/object")
    return parse_spec(data)


def spec_file_name(spec: TaskSpec) -> str:
    return spec.spec_hash().removeprefix("0x") + ".json"


def spec_uri(spec: TaskSpec, store: Path, base_url: str | None) -> str:
    """The URI miners will fetch (pure: no file is written)."""
    name = spec_file_name(spec)
    if base_url:
        return base_url.rstrip("/") + "/" + name
    return (store.resolve() / name).as_uri()


def publish_spec(spec: TaskSpec, store: Path, base_url: str | None = None) -> PublishedSpec:
    """Write the canonical spec to ``store`` (atomically; an identical file is kept)."""
    store.mkdir(parents=True, exist_ok=True)
    path = store / spec_file_name(spec)
    created = not path.is_file()
    if created:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(spec.canonical())
        tmp.replace(path)
    return PublishedSpec(path=path, uri=spec_uri(spec, store, base_url), created=created)
