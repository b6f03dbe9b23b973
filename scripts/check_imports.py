"""Enforce the package import rules of DESIGN §1.

client -> node, miner -> node, node -> nothing of ours; node never imports torch.
Exits 1 listing every offending import; run by `make lint` and by a unit test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"node", "miner", "client"}
ALLOWED = {"node": set(), "miner": {"node"}, "client": {"node"}}
FORBIDDEN_THIRD_PARTY = {
    "node": {"torch", "torchvision", "safetensors"},
    "client": set(),
    "miner": set(),
}


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) for every absolute import in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in imported_roots(tree):
                rel = path.relative_to(root)
                if name in OURS and name != package and name not in allowed:
                    problems.append(f"{rel}:{line}: {package} must not import {name}")
                if name in FORBIDDEN_THIRD_PARTY[package]:
                    problems.append(f"{rel}:{line}: {package} must not import {name}")
    return problems


def main() -> int:
    problems = violations()
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
