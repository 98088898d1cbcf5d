"""A stored upload read back: the one way anything after the workers gets its pixels.

An image row's `uri` was written by a producer vitrine does not trust. The workers read it
under the source policy (file roots judged on the real path, regular files only, a size
cap, public addresses only: `vitrine.sources.policy`, `vitrine.sources.fetch`) and decode it under
the image
limits (pixels, formats, decode time: `vitrine.pipeline.inference.decode`). Whatever reads the
photo again
after them (the desk's thumbnails, `vitrine explain`, `train --corrections`, contact
sheets) comes through here, so a path the workers refused is refused here too, with the
same words, and a decompression bomb the workers refused is never thumbnailed.
`tests/unit/test_read_path.py` enumerates every caller, so a new one cannot go around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitrine.ops.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from vitrine.pipeline.types import ImageLimits
    from vitrine.settings import Settings


class PhotoUnavailable(UserError):
    """The stored photo cannot be read or decoded. The message gives the workers' reason,
    for operators; pages for merchants show a fixed text instead (it could otherwise say
    what exists on the server)."""


def read_stored(settings: Settings, uri: str) -> bytes:
    """The bytes behind a stored `uri`, under the workers' source policy."""
    from vitrine.sources.fetch import PermanentError, TransientError, fetch_bytes

    try:
        return fetch_bytes(uri, settings.source_policy)
    except (PermanentError, TransientError) as exc:
        raise PhotoUnavailable(f"cannot read the photo: {exc}") from None


def decode_photo(
    data: bytes, limits: ImageLimits, *, draft_size: int | None, side: int | None = None
) -> Image.Image:
    """Upload bytes decoded under the workers' image limits, upright, with transparency
    composited onto white as the model sees it, in RGB. `side`: the longest side wanted
    (the workers' own `working_copy`: resized before it is flattened, and a JPEG decoded
    at the fraction that still gives it); None keeps the decoded size."""
    from vitrine.pipeline.inference.decode import BadImageError, decode
    from vitrine.pipeline.inference.flatten import working_copy

    try:
        img, _ = decode(
            data,
            limits=limits,
            draft_size=side or draft_size,
            draft_mode="RGB",
            draft_longest=side is not None,
        )
    except BadImageError as exc:
        raise PhotoUnavailable(f"not a usable photo: {exc}") from None
    return working_copy(img, side)
