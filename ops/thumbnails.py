"""Thumbnails for the review desk, made once per image and size, cached on disk.

A catalog grid shows dozens of photos that may each be megabytes and megapixels; decoding
them on every page view would make the desk slow and the API busy. The first request
reads the photo the way `vitrine explain` does (`read_source`), shrinks it and stores a
JPEG under `<data dir>/desk-thumbs/`; later requests send the file. The file name carries
the image's SHA-256, so a re-upload with new bytes under the same id gets a new
thumbnail, never a stale one, and the browser may cache it for long.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from ops.context import Context

#: Size name -> longest side in pixels: grid cells, and the item page's photo.
SIZES = {"s": 240, "m": 720}


def thumbnail_path(ctx: Context, *, image_id: int, sha256: str | None, size: str) -> Path:
    """Where the thumbnail of this image's current bytes lives (or will)."""
    tag = (sha256 or "unhashed")[:16]
    folder = ctx.settings.data_dir / "desk-thumbs" / f"{image_id % 256:02x}"
    return folder / f"{image_id}-{tag}-{size}.jpg"


def thumbnail(ctx: Context, *, image_id: int, uri: str, sha256: str | None, size: str) -> Path:
    """The cached thumbnail, made now if missing. `UserError` if the photo is unreadable."""
    path = thumbnail_path(ctx, image_id=image_id, sha256=sha256, size=size)
    if path.exists():
        return path
    from ops.explain import read_source

    path.parent.mkdir(parents=True, exist_ok=True)
    small = shrink(read_source(ctx, uri), SIZES[size])
    # Written aside and renamed: two requests for one new thumbnail never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(small)
    os.replace(tmp, path)
    return path


def shrink(data: bytes, side: int) -> bytes:
    """JPEG bytes of the photo, upright, its longest side at most `side`."""
    from ops.errors import UserError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
            upright = ImageOps.exif_transpose(img) or img
            upright.thumbnail((side, side))
            out = io.BytesIO()
            upright.convert("RGB").save(out, "JPEG", quality=85, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot make a thumbnail: {exc}") from None
    return out.getvalue()


def drop_thumbnails(ctx: Context, image_ids: list[int]) -> int:
    """Remove every cached thumbnail of these images (`vitrine forget` erases them with
    the rows); how many files went. `12-*` never matches image 123's `123-...`."""
    root = ctx.settings.data_dir / "desk-thumbs"
    removed = 0
    for image_id in image_ids:
        for path in (root / f"{image_id % 256:02x}").glob(f"{int(image_id)}-*.jpg"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
