"""One read path: every place that turns a stored `uri` into bytes, and bytes into pixels,
is listed here, so a new caller cannot go around the workers' rules unnoticed.

The rules live in `vitrine.sources.fetch.fetch_bytes` (source policy: file roots on the real path,
regular files only, size cap, network rules) and `vitrine.pipeline.inference.decode.decode` (pixels,
formats, decode time). Whatever reads a stored photo after the workers does so through
`vitrine.ops.stored_photos`. Adding a caller means adding it below, deliberately.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "pipeline",
    "sources",
    "db",
    "worker",
    "embedded",
    "ops",
    "bench",
    "cli",
    "api",
    "vitrine",
    "producer/src",
)

#: name -> the modules that may call it.
CALLERS = {
    # the source policy applied to a uri: the workers' batch fetch, and the one helper
    # everything after the workers uses
    "fetch_bytes": {"sources/fetch_many.py", "ops/stored_photos.py"},
    "fetch_all": {"worker/processing.py", "worker/reviews.py"},
    "read_stored": {
        "ops/thumbnails.py",  # the desk's thumbnails
        "ops/explain.py",  # vitrine explain ID
        "ops/corrections.py",  # train --corrections
        "ops/pictures.py",  # contact sheets (similar --png, demo)
    },
    # Pillow's parser on untrusted bytes: only behind the limits
    "open": {"pipeline/inference/decode.py"},  # as Image.open
}
#: Modules that spell a `file:` URI into a path (urlsplit + unquote), and why none of them
#: reads a stored photo: it checks, stages the user's own file, or deletes vitrine's own.
FILE_URI_PARSERS = {
    "sources/fetch.py": "reads, under the policy",
    "ops/api_uploads.py": "checks a client's uri against the roots; reads nothing",
    "ops/uploads.py": "stages the CLI user's own local files",
    "ops/forget.py": "deletes the files vitrine itself stored",
    "api/public.py": "shows a uri without the server's directories; reads nothing",
}
#: Network clients that could fetch a uri: only the policy's own, pinned connection.
NETWORK_MODULES = {"http.client", "urllib.request", "requests", "httpx", "aiohttp", "urllib3"}
NETWORK_USERS = {"sources/fetch.py"}
#: httpx without a socket: `bench desk` calls the app in process (httpx.ASGITransport).
IN_PROCESS_HTTP = {"bench/desk.py"}


def _modules() -> list[Path]:
    """Every module once: rglob does not follow vitrine/'s links to the rooms listed."""
    return sorted({p for package in PACKAGES for p in (ROOT / package).rglob("*.py")})


def _calls(tree: ast.AST) -> set[str]:
    """Names called in `tree`: `f(...)` gives f, `x.f(...)` gives f (Image.open: open,
    counted only when its receiver is `Image`)."""
    called = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id != "open":
            called.add(func.id)
        elif isinstance(func, ast.Attribute):
            receiver = func.value
            if func.attr == "open":
                if isinstance(receiver, ast.Name) and receiver.id == "Image":
                    called.add("open")
            else:
                called.add(func.attr)
    return called


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_reader_of_a_stored_photo_is_known() -> None:
    found: dict[str, set[str]] = {name: set() for name in CALLERS}
    for path in _modules():
        rel = str(path.relative_to(ROOT))
        for name in _calls(ast.parse(path.read_text())) & set(CALLERS):
            found[name].add(rel)
    assert found == CALLERS


def test_file_uris_are_spelled_into_paths_only_where_nothing_is_read_around_the_policy() -> None:
    parsers = set()
    for path in _modules():
        calls = _calls(ast.parse(path.read_text()))
        if {"urlsplit", "unquote"} <= calls:
            parsers.add(str(path.relative_to(ROOT)))
    assert parsers == set(FILE_URI_PARSERS)


def test_only_the_policy_speaks_to_the_network() -> None:
    users = set()
    for path in _modules():
        top = {name.split(".")[0] for name in _imported(ast.parse(path.read_text()))}
        full = _imported(ast.parse(path.read_text()))
        if full & NETWORK_MODULES or top & {"requests", "httpx", "aiohttp", "urllib3"}:
            users.add(str(path.relative_to(ROOT)))
    assert users == NETWORK_USERS | IN_PROCESS_HTTP
    for name in IN_PROCESS_HTTP:
        code = (ROOT / name).read_text()
        assert "ASGITransport(app=" in code and "HTTPTransport" not in code, name
        assert not re.search(r"httpx\.(get|post|Client\(|AsyncClient\((?!transport))", code), name


def test_the_enumeration_sees_a_bypass() -> None:
    """The checks above would catch a new reader: a module that opens a uri's bytes with
    Pillow directly is found."""
    bypass = ast.parse("from PIL import Image\ndef f(b):\n    return Image.open(b)\n")
    assert "open" in _calls(bypass)
    assert "read_stored" in _calls(ast.parse("read_stored(s, uri)"))
