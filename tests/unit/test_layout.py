"""The rules that keep the house standing, checked on the source itself.

The distribution installs one name, `vitrine`; its rooms are the repository's top-level
folders (docs/architecture.md). Imports point one way between rooms (`ALLOWED`), nothing
imports the rooms by their folder names, the producer imports nothing of vitrine, a long
module says why it is one job, and no block of code is written twice.
"""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Room -> the folder (or file) it lives in. `vitrine.pipeline.types` is the vocabulary
#: every room shares; the other pipeline rooms are pure logic of one kind each.
ROOMS: dict[str, str] = {
    "vitrine.pipeline.types": "pipeline/types.py",
    "vitrine.pipeline.inference": "pipeline/inference",
    "vitrine.pipeline.training": "pipeline/training",
    "vitrine.pipeline.synthetic": "pipeline/synthetic",
    "vitrine.pipeline.evaluation": "pipeline/evaluation",
    "vitrine.sources": "sources",
    "vitrine.settings": "vitrine/settings.py",
    "vitrine.db": "db",
    "vitrine.worker": "worker",
    "vitrine.embedded": "embedded",
    "vitrine.ops": "ops",
    "vitrine.bench": "bench",
    "vitrine.cli": "cli",
    "vitrine.api": "api",
    "vitrine_producer": "producer/src/vitrine_producer",
}
_PURE = ("vitrine.pipeline.types",)
_BELOW_OPS = (
    "vitrine.pipeline",
    "vitrine.sources",
    "vitrine.settings",
    "vitrine.db",
    "vitrine.worker",
    "vitrine.embedded",
)
#: What each room may import of ours (module prefixes), besides itself.
ALLOWED: dict[str, tuple[str, ...]] = {
    "vitrine.pipeline.types": (),
    # What a worker runs on a photo: decode through the model. Nothing of training.
    "vitrine.pipeline.inference": _PURE,
    # Training learns from what the generators make (photo views); never the reverse.
    "vitrine.pipeline.training": (
        *_PURE,
        "vitrine.pipeline.inference",
        "vitrine.pipeline.synthetic",
    ),
    "vitrine.pipeline.synthetic": (*_PURE, "vitrine.pipeline.inference"),
    "vitrine.pipeline.evaluation": (*_PURE, "vitrine.pipeline.inference"),
    # The read path every stored byte goes through: no settings, no database.
    "vitrine.sources": _PURE,
    "vitrine.settings": ("vitrine.pipeline", "vitrine.sources"),
    "vitrine.db": _PURE,
    "vitrine.worker": ("vitrine.pipeline", "vitrine.sources", "vitrine.settings", "vitrine.db"),
    "vitrine.embedded": ("vitrine.settings", "vitrine.worker.names", "vitrine.worker.celery_app"),
    "vitrine.ops": _BELOW_OPS,
    # Benchmarks measure every front end as its users meet it (`bench desk`: the desk's
    # pages through the app itself).
    "vitrine.bench": (*_BELOW_OPS, "vitrine.ops", "vitrine.api"),
    "vitrine.cli": (
        "vitrine.ops",
        "vitrine.bench",
        "vitrine.settings",
        "vitrine.pipeline.types",
        "vitrine.worker.names",
        "vitrine.api.server",
    ),
    # The HTTP API: like the CLI a front end of ops, and it reads through db.repository
    # inside transactions scoped to the caller's merchant.
    "vitrine.api": ("vitrine.ops", "vitrine.db", "vitrine.pipeline.types", "vitrine.settings"),
    # A distribution of its own, for producers that must not install TensorFlow.
    "vitrine_producer": (),
}
#: The folders' own names, which only `vitrine.` may be put in front of.
FOLDERS = ("pipeline", "sources", "db", "worker", "embedded", "ops", "bench", "cli", "api")
#: Size follows cohesion: a module has one job, and one that passes this many lines says
#: why it is still one job in a docstring paragraph starting "Size:".
LONG_MODULE = 500
FROZEN = ("db/migrations/versions/",)
REPEAT_LINES = 6


def _files(room: str) -> list[Path]:
    where = ROOT / ROOMS[room]
    return [where] if where.suffix == ".py" else sorted(where.rglob("*.py"))


def _all_files() -> list[Path]:
    return [path for room in ROOMS for path in _files(room)]


def _checked_files() -> list[Path]:
    """Every module of every room but the frozen migrations."""
    return [p for p in _all_files() if not str(p.relative_to(ROOT)).startswith(FROZEN)]


def _module_name(path: Path, root: Path) -> str:
    """The dotted name `path` is imported by: `vitrine.` and its place in the package."""
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts
    if parts[:2] == ("producer", "src"):
        parts = parts[2:]
    elif parts[0] != "vitrine":
        parts = ("vitrine", *parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, top-level or inside functions, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _room_of(module: str) -> str | None:
    """The longest room name `module` lies in (None: not ours)."""
    rooms = [room for room in ROOMS if _under(module, room)]
    return max(rooms, key=len) if rooms else ("vitrine" if _under(module, "vitrine") else None)


def _allowed(room: str, module: str) -> bool:
    target = _room_of(module)
    if target is None or target == room:
        return True
    if target == "vitrine":  # `import vitrine.pipeline` names a package: judge what it holds
        return any(_under(allowed, module) for allowed in ALLOWED[room])
    return any(_under(module, p) for p in ALLOWED[room])


def _wrong_imports(room: str, path: Path, root: Path = ROOT) -> list[str]:
    wrong = []
    for module in sorted(_imports(path, root)):
        if module.split(".")[0] in FOLDERS:
            wrong.append(f"{path.relative_to(root)} imports {module} (say vitrine.{module})")
        elif not _allowed(room, module):
            # `from vitrine.db import repository` names a submodule: judge its package
            parent = module.rsplit(".", 1)[0]
            if _room_of(parent) not in (None, "vitrine") and _allowed(room, parent):
                continue
            wrong.append(f"{path.relative_to(root)} imports {module}")
    return wrong


@pytest.mark.parametrize("room", ROOMS)
def test_imports_point_one_way(room: str) -> None:
    wrong = [line for path in _files(room) for line in _wrong_imports(room, path)]
    assert not wrong, "\n".join(wrong)


def test_every_module_lives_in_a_room() -> None:
    """The package holds nothing beside its rooms, so no module escapes the rules above."""
    package = {p.resolve() for p in (ROOT / "vitrine").rglob("*.py")}
    for link in (ROOT / "vitrine").iterdir():
        if link.is_symlink():
            package |= {p.resolve() for p in link.rglob("*.py")}
    covered = {p.resolve() for p in _all_files()}
    loose = {ROOT / "vitrine" / "__init__.py", ROOT / "vitrine" / "__main__.py"}
    loose.add(ROOT / "pipeline" / "__init__.py")  # the rooms of pure logic, no code
    left = sorted(str(p) for p in package - covered - {p.resolve() for p in loose})
    assert not [p for p in left if "/migrations/" not in p], left


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an inference module importing training or the database, a
    room named by its folder, and the worker importing the CLI are all reported."""
    bad = tmp_path / "pipeline" / "inference" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "from vitrine.pipeline.training import train\n"
        "import db.repository\n"
        "def f():\n    from vitrine.db import repository\n"
    )
    wrong = _wrong_imports("vitrine.pipeline.inference", bad, tmp_path)
    assert any("vitrine.pipeline.training" in w for w in wrong)
    assert any("say vitrine.db.repository" in w for w in wrong)
    assert any(w.endswith("imports vitrine.db.repository") for w in wrong)
    assert _allowed("vitrine.cli", "vitrine.ops.context")
    assert not _allowed("vitrine.cli", "vitrine.db.repository")
    assert not _allowed("vitrine.worker", "vitrine.embedded.launcher")
    assert not _allowed("vitrine.worker", "vitrine.cli.app")
    assert not _allowed("vitrine_producer", "vitrine.worker.names")


def test_a_long_module_says_why_it_is_one_job() -> None:
    unexplained = []
    for path in _checked_files():
        source = path.read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        if len(source.splitlines()) > LONG_MODULE and "\nSize:" not in "\n" + doc:
            rel = path.relative_to(ROOT)
            unexplained.append(f"{rel}: {len(source.splitlines())} lines, no 'Size:' reason")
    assert not unexplained, "\n".join(unexplained)


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
    for path in _checked_files():
        lines = _code_lines(path)
        for start in range(len(lines) - REPEAT_LINES + 1):
            window = lines[start : start + REPEAT_LINES]
            digest = hashlib.sha1("\n".join(t for _, t in window).encode()).hexdigest()
            seen[digest].append(f"{path.relative_to(ROOT)}:{window[0][0]}")
    repeats = [places for places in seen.values() if len(places) > 1]
    assert not repeats, "\n".join(" = ".join(p) for p in repeats)
