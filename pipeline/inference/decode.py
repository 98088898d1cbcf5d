"""Untrusted upload bytes -> an upright, fully loaded Pillow image, or a reason in words.

Everything a hostile or broken file can do is stopped here, before preprocessing sees a
pixel: a short list of formats (every plugin is attack surface), byte and pixel limits
checked from the header before decoding (decompression bombs), and any exception a plugin
raises turned into `BadImageError` with a message fit for a merchant. Large JPEGs are
decoded at 1/2..1/8 scale (`Image.draft`), which is where almost all the time would
otherwise go.

Decoding time is bounded too (`ImageLimits.max_decode_seconds`); how, and where it cannot
be, is `vitrine.pipeline.inference.deadline`'s docstring.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import warnings
from collections.abc import Sequence

from PIL import Image, ImageOps

from vitrine.pipeline.inference.allocator import keep_freed_memory
from vitrine.pipeline.inference.deadline import Deadline, DecodeTimeout, TimedBytes, alarm
from vitrine.pipeline.types import ImageInfo, ImageLimits

#: Formats `decode` accepts (only those this Pillow build can open are used). Deliberately
#: short: every plugin is attack surface, and e.g. EPS would shell out to Ghostscript.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

#: File suffixes (lower-case) of the formats above: what `load_labelled_folder` treats as
#: images. (MPO files are JPEGs with extra frames and usually carry a JPEG suffix.)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
)

#: Default for `decode(draft_size=...)`: JPEGs are decoded at the smallest 1/2^k scale whose
#: shorter side is still >= this many pixels (then trimmed and scaled to 28 anyway).
DEFAULT_DRAFT_SIZE = 256


class BadImageError(ValueError):
    """The upload cannot be used; the message says why, in words fit for a merchant."""


def _millions(n: float) -> str:
    value = n / 1e6
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"  # 2,500 / 900 / 40 / 0.5


def _megabytes(n: float) -> str:
    return f"{_millions(n)} MB"


def _megapixels(n: float) -> str:
    return f"{_millions(n)} Mpx"


def _bomb_error(exc: Exception, max_pixels: int) -> BadImageError:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else None
    what = f"image is {_megapixels(pixels)}" if pixels else "image is too large"
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    return BadImageError(
        f"{what}, over the {_megapixels(limit)} limit (refusing to decode a possible "
        "decompression bomb)"
    )


def _claimed_format(data: bytes, formats: Sequence[str]) -> str | None:
    """The format whose magic bytes `data` starts with, if any (for error messages)."""
    prefix = data[:16]
    for fmt in formats:
        accept = Image.OPEN[fmt][1]
        try:
            claimed = accept(prefix) if accept is not None else False
        except Exception:  # pragma: no cover - a plugin's sniffing is never fatal here
            continue
        if claimed and not isinstance(claimed, str):  # (a str is a warning, not a match)
            return fmt
    return None


def _open_error(exc: Exception, data: bytes, usable: list[str]) -> BadImageError:
    """Why `Image.open` failed, in words. Pillow reports a header it cannot parse as
    "unidentified"; when the magic bytes name a format, the file is a broken one of it."""
    claimed = _claimed_format(data, usable)
    unidentified = isinstance(exc, Image.UnidentifiedImageError)
    if claimed:
        why = "its header cannot be read" if unidentified else str(exc)
        return BadImageError(f"truncated or corrupt {claimed}: {why}")
    if unidentified:
        return BadImageError(f"not an image (unrecognised format; accepted: {', '.join(usable)})")
    return BadImageError(f"not an image (unreadable header: {exc})")


def decode(
    data: bytes,
    *,
    limits: ImageLimits,
    draft_size: int | None = DEFAULT_DRAFT_SIZE,
    draft_mode: str | None = None,
    formats: Sequence[str] = ACCEPTED_FORMATS,
    sha256: str | None = None,
    draft_longest: bool = False,
) -> tuple[Image.Image, ImageInfo]:
    """Safely decode untrusted upload bytes into an upright, fully loaded Pillow image.

    Limits are checked before any pixel is decoded: byte size first (`limits.max_bytes`),
    then width*height from the header (`limits.max_pixels`); decoding, EXIF and transpose
    together may take `limits.max_decode_seconds` (see the module docstring for how that
    is enforced, and where it cannot be). JPEGs are decoded at reduced scale when
    `draft_size` is set (shorter side stays >= draft_size, or with `draft_longest` the
    longer side: the working copy's own measure; None decodes at full size);
    `draft_mode` "L"/"RGB" lets libjpeg produce that mode directly. EXIF orientation is
    applied. `ImageInfo` records the sha256 of the bytes (`sha256`: the caller hashed them
    already) and the ORIGINAL upright
    dimensions (before draft scaling).

    Every failure raises `BadImageError` with a human-readable reason. The first call in a
    process tunes glibc's malloc to keep large freed buffers
    (`vitrine.pipeline.inference.allocator`: 0.62x
    the CPU time for WebP, 0.74x for the photo mix).
    """
    keep_freed_memory()
    max_bytes = limits.max_bytes
    if not data:
        raise BadImageError("empty file")
    if len(data) > max_bytes:
        raise BadImageError(
            f"file is {_megabytes(len(data))}, over the {_megabytes(max_bytes)} limit"
        )
    Image.init()
    usable = [f for f in (s.upper() for s in formats) if f in Image.OPEN]
    deadline = Deadline(limits.max_decode_seconds)
    try:
        with alarm(deadline):
            upright, fmt, width, height = _decode(
                data, deadline, usable, limits.max_pixels, draft_size, draft_mode, draft_longest
            )
            deadline.check()  # (a C call that outlasted the deadline returns here)
    except DecodeTimeout:
        raise BadImageError(
            f"decoding took longer than the {deadline.seconds:g} s limit (stopped after "
            f"{time.monotonic() - deadline.start:.2f} s)"
        ) from None
    info = ImageInfo(
        sha256=sha256 or hashlib.sha256(data).hexdigest(), width=width, height=height, format=fmt
    )
    return upright, info


def _draft_request(width: int, height: int, side: int, longest: bool) -> tuple[int, int]:
    """The size `Image.draft` must keep at least (it picks the smallest 1/2^k scale that
    does, in both directions): `side` on the shorter side, or on the longer with
    `longest`, the other in proportion."""
    if not longest:
        return side, side
    scale = side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _decode(
    data: bytes,
    deadline: Deadline,
    usable: list[str],
    max_pixels: int,
    draft_size: int | None,
    draft_mode: str | None,
    draft_longest: bool = False,
) -> tuple[Image.Image, str, int, int]:
    """`decode` within its deadline: (upright image, format, upright width and height)."""
    with warnings.catch_warnings():
        # Local to this block (restored on exit): Pillow only *warns* between 1x and 2x
        # Image.MAX_IMAGE_PIXELS; here that is an error like everything else.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data" etc.: log noise
        try:
            img = Image.open(TimedBytes(data, deadline), formats=usable)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, max_pixels) from exc
        except Exception as exc:  # unidentified, or a plugin choked (WebP decodes here)
            raise _open_error(exc, data, usable) from exc

        fmt = img.format or "image"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise BadImageError(f"{fmt} has zero width or height ({width}x{height})")
        if width * height > max_pixels:
            raise BadImageError(
                f"image is {width}x{height} = {_megapixels(width * height)}, over the "
                f"{_megapixels(max_pixels)} limit"
            )
        deadline.check()
        try:
            if draft_size and fmt in ("JPEG", "MPO"):
                img.draft(draft_mode, _draft_request(width, height, draft_size, draft_longest))
            img.load()
            deadline.check()
            orientation = img.getexif().get(0x0112, 1)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, max_pixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as exc:
            raise BadImageError(f"truncated or corrupt {fmt}: {exc}") from exc
        except Exception as exc:  # hostile data can trip other errors inside plugins
            raise BadImageError(f"truncated or corrupt {fmt}: {type(exc).__name__}: {exc}") from exc

    deadline.check()
    upright: Image.Image = img
    if orientation in (2, 3, 4, 5, 6, 7, 8):  # (exif_transpose would copy even when upright)
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # malformed EXIF: the pixels are fine, keep them as stored
            orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return upright, fmt, width, height
