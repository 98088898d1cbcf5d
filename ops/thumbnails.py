"""Thumbnails for the review desk, made once per image and size, cached on disk.

A catalog grid shows dozens of photos that may each be megabytes and megapixels; decoding
them on every page view would make the desk slow and the API busy. The first request
reads the photo through the workers' own rules (`vitrine.ops.stored_photos`: source policy, image
limits), composites any transparency onto white as the model sees it, shrinks it and stores
a JPEG under `<data dir>/desk-thumbs/`; later requests send the file. The file name carries
the image's SHA-256, so a re-upload with new bytes under the same id gets a new
thumbnail, never a stale one, and the browser may cache it for long.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from vitrine.ops.context import Context
from vitrine.ops.stored_photos import decode_photo, read_stored

if TYPE_CHECKING:
    from vitrine.pipeline.types import ImageLimits

#: Size name -> longest side in pixels: grid cells, and the item page's photo.
SIZES = {"s": 240, "m": 720}


def thumbnail_path(
    ctx: Context, *, key: int, sha256: str | None, size: str, kind: str = "images"
) -> Path:
    """Where the thumbnail of this image's (or review photo's) current bytes lives (or
    will). Review photos (`kind` "reviews") have folders of their own: their ids are
    another sequence."""
    tag = (sha256 or "unhashed")[:16]
    root = ctx.settings.data_dir / "desk-thumbs"
    folder = (root if kind == "images" else root / kind) / f"{key % 256:02x}"
    return folder / f"{key}-{tag}-{size}.jpg"


def thumbnail(
    ctx: Context, *, key: int, uri: str, sha256: str | None, size: str, kind: str = "images"
) -> Path:
    """The cached thumbnail, made now if missing; `PhotoUnavailable` if the photo cannot
    be read or decoded under the workers' rules."""
    path = thumbnail_path(ctx, key=key, sha256=sha256, size=size, kind=kind)
    if path.exists():
        return path
    small = shrink(read_stored(ctx.settings, uri), SIZES[size], ctx.settings.image_limits)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: two requests for one new thumbnail never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(small)
    os.replace(tmp, path)
    return path


def shrink(data: bytes, side: int, limits: ImageLimits) -> bytes:
    """JPEG bytes of the photo, upright, on white, its longest side at most `side`."""
    img = decode_photo(data, limits, draft_size=None, side=side)  # the workers' working copy
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


def drop_thumbnails(ctx: Context, image_ids: list[int], kind: str = "images") -> int:
    """Remove every cached thumbnail of these images (or review photos: `kind` "reviews";
    `vitrine forget` erases them with the rows); how many files went. `12-*` never matches
    image 123's `123-...`."""
    root = ctx.settings.data_dir / "desk-thumbs"
    root = root if kind == "images" else root / kind
    removed = 0
    for image_id in image_ids:
        for path in (root / f"{image_id % 256:02x}").glob(f"{int(image_id)}-*.jpg"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
