"""What the API and the desk show of where photos live: never the server's directories.

An image row keeps the `file:` URI the workers read, which names the data directory and
the file roots. Clients need none of it, and a path is a map of the server. So a photo
vitrine stored is shown as `upload:<path inside the upload directory>`, any other local
file as `local:<its name>`, and error texts have those directories replaced the same way.
http(s) URLs are the client's own and shown as sent, less any password in them.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from vitrine.settings import Settings


def public_uri(settings: Settings, uri: str) -> str:
    """`uri` as a client may see it (see the module docstring)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if parts.password is None and parts.username is None:
            return uri
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    path = unquote(parts.path) if scheme == "file" else uri
    uploads = _spellings(settings.uploads)
    for root in uploads:
        if path.startswith(root + os.sep):
            return "upload:" + path[len(root) + 1 :]
    return "local:" + Path(path).name


def public_text(settings: Settings, text: str | None) -> str | None:
    """`text` with every server directory vitrine knows replaced: a path in the upload
    directory by `upload:<path>`, the file roots by `<file root>`, the data directory by
    `<data dir>`."""
    if not text:
        return text
    for root, inside, bare in _replacements(settings):
        text = text.replace("file://" + root + "/", inside).replace(root + "/", inside)
        text = text.replace(root, bare)
    return text


def _replacements(settings: Settings) -> list[tuple[str, str, str]]:
    """(directory, what a path inside it starts with instead, what the directory itself
    is shown as), the longest directory first, so the upload directory inside the data
    directory is named as such; the first name given to a directory wins."""
    named = [(settings.uploads, "upload:", "<upload dir>")]
    named += [(settings.data_dir, "<data dir>/", "<data dir>")]
    named += [(root, "<file root>/", "<file root>") for root in settings.source_policy.file_roots]
    pairs: dict[str, tuple[str, str]] = {}
    for directory, inside, bare in named:
        for spelling in _spellings(directory):
            pairs.setdefault(spelling, (inside, bare))
    ordered = sorted(pairs.items(), key=lambda pair: -len(pair[0]))
    return [(root, inside, bare) for root, (inside, bare) in ordered]


def _spellings(directory: Path) -> list[str]:
    """The directory as configured and as resolved (they differ behind a symlink)."""
    written = os.path.abspath(directory)
    return list(dict.fromkeys([written, os.path.realpath(written)]))
