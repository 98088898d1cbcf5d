"""The review desk's Grad-CAM pictures, made once per image, bytes and model, cached on disk.

An item page shows where the model looked (`vitrine.ops.explain.heat_picture`: the photo
beside the photo under the map). Computing one reads and decodes the photo under the
workers' rules and takes gradients through the model, about a second; so, as with the
thumbnails (`vitrine.ops.thumbnails`), the first request stores a PNG under
`<data dir>/desk-heat/` and later ones send the file. The name carries the image's
SHA-256 and the model's key (hashed), so new bytes under the same id, or another active
model, get a new picture, never a stale one; the picture it replaces is removed then.

The API has one model in memory (`PhotoEmbedder`, shared with search by photo) and the
pictures are made through it. Pictures are made one at a time per process, under
`_MAKING`: a page opened twice, or two people on one item, compute it once, and a burst
of new items cannot take every core from the searches. The model itself needs no lock
against the searches running beside it: a search runs the traced inference function
and Grad-CAM an eager call with a gradient tape of its own, and neither writes to the
model (inference mode: batch normalisation reads its statistics, dropout is off);
`tests/unit/test_desk_heat.py` runs both at once and compares them with a serial run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from vitrine.db.types import ModelRow
from vitrine.ops.context import Context
from vitrine.ops.explain import heat_picture
from vitrine.ops.photo_search import PhotoEmbedder

log = logging.getLogger("vitrine.desk")
FOLDER = "desk-heat"
_MAKING = threading.Lock()


def heat_map_path(ctx: Context, *, image_id: int, sha256: str | None, model_key: str) -> Path:
    """Where the picture of this image's current bytes under this model lives (or will)."""
    tag = (sha256 or "unhashed")[:16]
    model = hashlib.sha256(model_key.encode()).hexdigest()[:12]
    folder = ctx.settings.data_dir / FOLDER / f"{image_id % 256:02x}"
    return folder / f"{image_id}-{tag}-{model}.png"


def heat_map(
    ctx: Context,
    embedder: PhotoEmbedder,
    *,
    image_id: int,
    uri: str,
    sha256: str | None,
    active: ModelRow,
) -> Path:
    """The cached picture, made now with `active` (through `embedder`'s loaded model) if
    missing; `PhotoUnavailable` if the photo cannot be read or decoded under the
    workers' rules."""
    path = heat_map_path(ctx, image_id=image_id, sha256=sha256, model_key=active.key)
    if path.exists():
        return path
    with _MAKING:
        if path.exists():  # made by the request this one waited for
            return path
        made = heat_picture(
            ctx, uri=uri, embedder=embedder, active=active, caption=f"image {image_id}"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a request never sends half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(made.png)
        os.replace(tmp, path)
        log.info("heat map of image %d made in %.2f s", image_id, made.seconds)
        for old in _pictures_of(ctx, image_id):  # other bytes or another model's
            if old != path:
                old.unlink(missing_ok=True)
    return path


def drop_heat_maps(ctx: Context, image_ids: list[int]) -> int:
    """Remove every cached picture of these images (`vitrine forget` erases them with the
    rows); how many files went."""
    removed = 0
    for image_id in image_ids:
        for path in _pictures_of(ctx, image_id):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _pictures_of(ctx: Context, image_id: int) -> list[Path]:
    """`12-*` never matches image 123's `123-...`."""
    folder = ctx.settings.data_dir / FOLDER / f"{image_id % 256:02x}"
    return list(folder.glob(f"{int(image_id)}-*.png"))
