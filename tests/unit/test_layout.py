"""The rules that keep the house standing, checked on the source itself.

Imports point one way (README "Layout"): `pipeline` imports nothing of ours, `db` only
`pipeline.types`, the worker runtime never the CLI, orchestration or embedded servers;
modules stay small; no block of code is written twice.
"""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "db", "worker", "embedded", "ops", "cli", "api")

#: What each package may import of ours (module prefixes), besides itself.
ALLOWED: dict[str, tuple[str, ...]] = {
    "pipeline": (),
    "db": ("pipeline.types",),
    "worker": ("pipeline", "db"),
    "embedded": ("worker.settings", "worker.names", "worker.celery_app"),
    "ops": ("pipeline", "db", "worker", "embedded"),
    "cli": ("ops", "worker.settings", "worker.names", "api.server"),
    # The HTTP API: like the CLI a front end of ops, and it reads through db.repository
    # inside transactions scoped to the caller's merchant.
    "api": ("ops", "db", "pipeline.types", "worker.settings"),
}
MAX_LINES = 300
FROZEN = ("db/migrations/versions/",)
REPEAT_LINES = 6


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, top-level or inside functions, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.relative_to(ROOT).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _allowed(package: str, module: str) -> bool:
    if module.split(".")[0] == package:
        return True
    return any(module == p or module.startswith(p + ".") for p in ALLOWED[package])


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for module in sorted(_imports(path)):
            # `from db import repository` names a submodule: judge the longest our-module path
            if _ours(module) and not _allowed(package, module):
                parent = module.rsplit(".", 1)[0]
                if module.count(".") and _allowed(package, parent) and parent != package:
                    continue
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: a pipeline module importing db is reported."""
    bad = tmp_path / "pipeline" / "x.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from db import repository\n")
    assert "db.repository" in {m for m in _imports_at(bad, tmp_path) if _ours(m)}
    assert not _allowed("pipeline", "db.repository")
    assert _allowed("cli", "ops.context") and not _allowed("cli", "db.repository")
    assert not _allowed("worker", "embedded.launcher") and not _allowed("worker", "cli.app")


def _imports_at(path: Path, root: Path) -> set[str]:
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return _imports(path)
    finally:
        ROOT = saved


def test_modules_stay_small() -> None:
    big = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for package in PACKAGES
        for path in _modules(package)
        if not any(str(path.relative_to(ROOT)).startswith(f) for f in FROZEN)
        and (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, "\n".join(big)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of lines that carry code: no blanks, comments,
    imports, docstrings or lone brackets."""
    source = path.read_text()
    skipped: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skipped |= set(range(node.lineno, (node.end_lineno or 0) + 1))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skipped |= set(range(value.lineno, (value.end_lineno or 0) + 1))
    kept = []
    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if (
            not line
            or number in skipped
            or line.startswith("#")
            or not any(ch.isalnum() for ch in line)
        ):
            continue
        kept.append((number, line))
    return kept


def test_no_block_is_written_twice() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in _modules(package):
            rel = str(path.relative_to(ROOT))
            if any(rel.startswith(f) for f in FROZEN):
                continue
            lines = _code_lines(path)
            for start in range(len(lines) - REPEAT_LINES + 1):
                window = lines[start : start + REPEAT_LINES]
                digest = hashlib.sha1("\n".join(t for _, t in window).encode()).hexdigest()
                seen[digest].append(f"{rel}:{window[0][0]}")
    repeats = [places for places in seen.values() if len(places) > 1]
    assert not repeats, "\n".join(" = ".join(p) for p in repeats)
