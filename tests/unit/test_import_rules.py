"""The package dependency rules of DESIGN §1 hold for the whole tree."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    path = ROOT / "scripts/check_imports.py"
    spec = importlib.util.spec_from_file_location("check_imports", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tree_follows_import_rules() -> None:
    assert _checker().violations() == []


def test_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    for package in ("node", "miner", "client"):
        (tmp_path / package).mkdir()
    (tmp_path / "node/bad.py").write_text("import torch\nfrom miner.automl import space\n")
    (tmp_path / "client/bad.py").write_text(
        textwrap.dedent("from miner import cli\nimport node.errors\n")
    )
    (tmp_path / "miner/ok.py").write_text("import torch\nfrom node.errors import MantaError\n")
    problems = _checker().violations(tmp_path)
    assert problems == [
        "node/bad.py:1: node must not import torch",
        "node/bad.py:2: node must not import miner",
        "client/bad.py:1: client must not import miner",
    ]
