"""Fuzzing vitrine.pipeline.inference.preprocess.preprocess_bytes with mutated REAL image files
(Hypothesis).

Seeds are real files Pillow writes here, per format several sizes and modes, some with
EXIF orientation, progressive/animated/multi-page variants, several TIFF compressions.
Each example takes one seed and applies 1-4 mutations:

* flip: flip 1-8 bits anywhere;  replace: overwrite bytes with random or boundary values;
* truncate: cut the file at any offset;  duplicate: copy a byte range to another offset;
* splice: insert or overwrite with a slice of another seed (of any format);
* field: set a parsed header field (PNG IHDR/acTL/fcTL and chunk lengths, JPEG SOF/SOS/DRI
  and segment lengths, GIF screen and image descriptors, TIFF IFD entries, WebP RIFF,
  VP8/VP8L/VP8X/ANMF sizes, BMP header) to 0, 1, a power of two, 2^n-1, +-1 or double its value;
* segment: drop, duplicate or swap a whole PNG chunk, JPEG marker segment or RIFF chunk;
* recrc: recompute every PNG chunk CRC, so that mutated chunks get parsed, not refused.

The property: `preprocess_bytes` either returns model input or raises `BadImageError`
(anything else fails the test), and no call takes longer than the decode-time limit plus
a margin.

Runs: by default 60 derandomized examples per format (360 in all, the same every run,
about 10 s on 2 cores). `VITRINE_FUZZ_EXAMPLES=5000` runs that many per format with fresh
random inputs; a failure prints the input to replay with `@reproduce_failure`, and
`--hypothesis-seed=N` repeats a run. Whatever fuzzing found is kept in `REGRESSIONS`.
"""

from __future__ import annotations

import functools
import io
import os
import time
import zlib
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitrine.pipeline.inference.decode import BadImageError
from vitrine.pipeline.inference.preprocess import preprocess_bytes
from vitrine.pipeline.types import ImageLimits, PreprocessSpec

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
#: Leading bytes that identify the format (WebP: "RIFF", size, "WEBP"): kept in 9 of 10
#: examples, so that most reach the plugin's parser instead of "not an image".
MAGIC = {"JPEG": 3, "PNG": 8, "WEBP": 12, "GIF": 6, "TIFF": 4, "BMP": 2}
#: Production limits, but 4 Mpx: a mutated header may claim any size up to the limit, and
#: preprocessing a claimed 40 Mpx blank would time the pipeline, not the decoder.
LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=4_000_000, max_decode_seconds=1.0)
MARGIN_S = 1.0  # preprocessing after decoding, and a loaded machine
EXAMPLES = int(os.environ.get("VITRINE_FUZZ_EXAMPLES") or 0)
SPEC = PreprocessSpec()

BOUNDARY = (0, 1, 2, 7, 8, 15, 16, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000)
BOUNDARY += (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)

Field = tuple[int, int, str]  # offset, size, byte order
OPS = ("flip", "replace", "truncate", "duplicate", "splice", "field", "segment", "recrc")


# --------------------------------------------------------------------------- seeds


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """A product-photo-like RGB picture: light gradient, a dark object, some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([200 + x * 40 // width, 210 + y * 30 // height, np.full_like(x, 230)], 2)
    arr[height // 4 : 3 * height // 4 + 1, width // 3 : 2 * width // 3 + 1] //= 4
    arr = arr + rng.integers(-8, 9, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _frames(n: int, mode: str, size: tuple[int, int] = (32, 24)) -> list[Image.Image]:
    return [_picture(*size, seed=i).convert(mode) for i in range(n)]


@functools.cache
def seeds() -> dict[str, list[bytes]]:
    pic = _picture
    wide = Image.fromarray((np.arange(24 * 24, dtype=np.uint16) * 97).reshape(24, 24))

    def anim(fmt: str, frames: list[Image.Image], **kwargs: object) -> bytes:
        return _save(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)

    return {
        "JPEG": [
            _save(pic(64, 48, 1), "JPEG", quality=90),
            _save(pic(17, 9, 2).convert("L"), "JPEG"),
            _save(pic(120, 90, 3), "JPEG", progressive=True, exif=_exif(6)),
            _save(pic(32, 32, 4).convert("CMYK"), "JPEG"),
            _save(pic(300, 200, 5), "JPEG", quality=75, optimize=True, exif=_exif(3)),
            _save(pic(640, 480, 6), "JPEG", progressive=True, exif=_exif(8)),  # drafted
        ],
        "PNG": [
            _save(pic(64, 48, 1), "PNG"),
            _save(pic(33, 21, 2).convert("RGBA"), "PNG", exif=_exif(8)),
            _save(pic(40, 40, 3).convert("P"), "PNG", transparency=0),
            _save(wide, "PNG"),  # I;16
            _save(pic(50, 20, 5).convert("1"), "PNG"),
            _save(pic(16, 16, 6).convert("LA"), "PNG"),
            anim("PNG", _frames(3, "RGBA"), duration=50, disposal=1),  # APNG
        ],
        "WEBP": [
            _save(pic(64, 48, 1), "WEBP", quality=80),
            _save(pic(33, 21, 2).convert("RGBA"), "WEBP", lossless=True),
            _save(pic(90, 60, 3), "WEBP", exif=_exif(6)),
            anim("WEBP", _frames(2, "RGB"), duration=100),
        ],
        "GIF": [
            _save(pic(64, 48, 1).convert("P"), "GIF"),
            _save(pic(20, 20, 2).convert("L"), "GIF", transparency=0),
            anim("GIF", _frames(3, "P"), duration=80, disposal=2, loop=0),
            _save(Image.new("P", (1, 1)), "GIF"),
        ],
        "BMP": [
            _save(pic(30, 20, 1), "BMP"),
            _save(pic(31, 17, 2).convert("P"), "BMP"),
            _save(pic(33, 9, 3).convert("1"), "BMP"),
            _save(pic(12, 12, 4).convert("RGBA"), "BMP"),
        ],
        "TIFF": [
            _save(pic(40, 30, 1), "TIFF", tiffinfo={0x0112: 6}),
            _save(pic(40, 30, 2).convert("L"), "TIFF", compression="tiff_lzw"),
            _save(pic(24, 24, 3).convert("RGBA"), "TIFF", compression="tiff_adobe_deflate"),
            _save(pic(50, 20, 4).convert("1"), "TIFF", compression="group4"),
            _save(wide, "TIFF", compression="packbits"),
            _save(pic(16, 16, 5).convert("CMYK"), "TIFF"),
            _save(pic(48, 32, 6), "TIFF", compression="jpeg"),
            anim("TIFF", _frames(2, "RGB")),
        ],
    }


# --------------------------------------------------------------------------- structure


def _png_chunks(d: bytes) -> list[tuple[int, int]]:
    out, pos = [], 8
    while pos + 12 <= len(d):
        end = pos + 12 + int.from_bytes(d[pos : pos + 4], "big")
        if end > len(d):
            break
        out.append((pos, end))
        pos = end
    return out


def _jpeg_segments(d: bytes) -> list[tuple[int, int]]:
    out, pos = [], 2
    while pos + 4 <= len(d) and d[pos] == 0xFF:
        size = int.from_bytes(d[pos + 2 : pos + 4], "big")
        if size < 2 or pos + 2 + size > len(d):
            break
        out.append((pos, pos + 2 + size))
        if d[pos + 1] == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + size
    return out


def _riff_chunks(d: bytes) -> list[tuple[int, int]]:
    out, pos = [], 12
    while pos + 8 <= len(d):
        size = int.from_bytes(d[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if end > len(d):
            break
        out.append((pos, end))
        pos = end
    return out


def segments(d: bytes) -> list[tuple[int, int]]:
    if d.startswith(b"\x89PNG"):
        return _png_chunks(d)
    if d.startswith(b"\xff\xd8"):
        return _jpeg_segments(d)
    if d.startswith(b"RIFF") and d[8:12] == b"WEBP":
        return _riff_chunks(d)
    return []


def _gif_fields(d: bytes) -> list[Field]:
    fields: list[Field] = [(6, 2, "little"), (8, 2, "little"), (10, 1, "little")]
    pos = 13 + (3 << ((d[10] & 7) + 1) if d[10] & 0x80 else 0)
    while pos + 10 < len(d) and d[pos] in (0x21, 0x2C):
        if d[pos] == 0x2C:  # image descriptor: left, top, width, height, packed
            fields += [(pos + i, 2, "little") for i in (1, 3, 5, 7)] + [(pos + 9, 1, "little")]
            pos += 10 + (3 << ((d[pos + 9] & 7) + 1) if d[pos + 9] & 0x80 else 0)
            fields.append((pos, 1, "little"))  # LZW minimum code size
            pos += 1
        else:
            pos += 2
        while pos < len(d) and d[pos]:  # data sub-blocks
            pos += 1 + d[pos]
        pos += 1
    return fields


def _tiff_fields(d: bytes) -> list[Field]:
    order = "little" if d[:2] == b"II" else "big"
    fields: list[Field] = [(4, 4, order)]
    ifd = int.from_bytes(d[4:8], order)
    for _ in range(4):  # the first IFDs
        if not 8 <= ifd <= len(d) - 2:
            break
        count = int.from_bytes(d[ifd : ifd + 2], order)
        fields.append((ifd, 2, order))
        for entry in range(ifd + 2, ifd + 2 + 12 * min(count, 64), 12):
            fields += [(entry + 2, 2, order), (entry + 4, 4, order), (entry + 8, 4, order)]
            fields.append((entry + 8, 2, order))  # a SHORT value sits in the first half
        nxt = ifd + 2 + 12 * count
        ifd = int.from_bytes(d[nxt : nxt + 4], order) if nxt + 4 <= len(d) else 0
    return fields


def _webp_fields(d: bytes) -> list[Field]:
    fields: list[Field] = [(4, 4, "little")]
    for start, _ in _riff_chunks(d):
        fields.append((start + 4, 4, "little"))
        kind = d[start : start + 4]
        if kind == b"VP8X":
            fields += [
                (start + 8, 1, "little"),
                (start + 12, 3, "little"),
                (start + 15, 3, "little"),
            ]
        elif kind == b"VP8 ":
            fields += [(start + 14, 2, "little"), (start + 16, 2, "little")]
        elif kind == b"VP8L":
            fields.append((start + 9, 4, "little"))  # 14-bit width-1, height-1, alpha, version
        elif kind == b"ANMF":
            fields += [(start + 8 + i, 3, "little") for i in (0, 3, 6, 9, 12)]
    return fields


def header_fields(d: bytes) -> list[Field]:
    """Integer header fields of the file as it is now (it may already be mutated)."""
    fields: list[Field] = []
    if d.startswith(b"\x89PNG"):
        for start, end in _png_chunks(d):
            fields.append((start, 4, "big"))
            kind = d[start + 4 : start + 8]
            if kind == b"IHDR":
                fields += [(start + 8, 4, "big"), (start + 12, 4, "big")]
                fields += [(start + i, 1, "big") for i in (16, 17, 20)]
            elif kind in (b"acTL", b"fcTL"):
                fields += [
                    (start + 8 + i, 4, "big") for i in range(0, min(end - start - 12, 24), 4)
                ]
    elif d.startswith(b"\xff\xd8"):
        for start, _ in _jpeg_segments(d):
            marker = d[start + 1]
            fields.append((start + 2, 2, "big"))
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
                fields += [(start + 4, 1, "big"), (start + 5, 2, "big"), (start + 7, 2, "big")]
                fields.append((start + 9, 1, "big"))
                for i in range(min(d[start + 9], 4)):
                    fields += [(start + 11 + 3 * i, 1, "big"), (start + 12 + 3 * i, 1, "big")]
            elif marker == 0xDA:
                fields += [(start + 4, 1, "big"), (start + 6, 1, "big")]
            elif marker == 0xDD:
                fields.append((start + 4, 2, "big"))
    elif d[:6] in (b"GIF87a", b"GIF89a") and len(d) > 13:
        fields = _gif_fields(d)
    elif d[:4] in (b"II*\0", b"MM\0*"):
        fields = _tiff_fields(d)
    elif d.startswith(b"RIFF") and d[8:12] == b"WEBP":
        fields = _webp_fields(d)
    elif d.startswith(b"BM"):  # offsets, header size, width, height, planes, bits, ...
        fields = [(2, 4, "little"), (10, 4, "little"), (14, 4, "little"), (18, 4, "little")]
        fields += [(22, 4, "little"), (26, 2, "little"), (28, 2, "little")]
        fields += [(i, 4, "little") for i in (30, 34, 46, 50)]
    return [(o, n, order) for o, n, order in fields if 0 <= o and o + n <= len(d)]


def fix_png_crcs(d: bytearray) -> bytearray:
    for start, end in _png_chunks(bytes(d)) if d.startswith(b"\x89PNG") else []:
        crc = zlib.crc32(d[start + 4 : end - 4])
        d[end - 4 : end] = crc.to_bytes(4, "big")
    return d


# --------------------------------------------------------------------------- mutations


def mutate(draw: st.DrawFn, d: bytearray) -> bytearray:
    op = draw(st.sampled_from(OPS))
    pos = draw(st.integers(0, max(len(d) - 1, 0)))
    if op == "flip" and d:
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(d) - 1))
            d[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "replace" and d:
        value = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\0", b"\xff", b"\x7f"]))
        d[pos : pos + len(value)] = value
    elif op == "truncate":
        del d[pos:]
    elif op == "duplicate" and d:
        end = draw(st.integers(pos, min(len(d), pos + 4096)))
        at = draw(st.integers(0, len(d)))
        d[at:at] = d[pos:end]
    elif op == "splice":
        donor = draw(st.sampled_from([s for group in seeds().values() for s in group]))
        a = draw(st.integers(0, len(donor) - 1))
        piece = donor[a : a + draw(st.integers(1, 2048))]
        if draw(st.booleans()):
            d[pos:pos] = piece
        else:
            d[pos : pos + len(piece)] = piece
    elif op == "field" and (fields := header_fields(bytes(d))):
        at, size, order = draw(st.sampled_from(fields))
        old = int.from_bytes(d[at : at + size], order)  # type: ignore[arg-type]
        new = draw(st.sampled_from(BOUNDARY + (old + 1, old - 1, old * 2, old // 2)))
        d[at : at + size] = (new % 256**size).to_bytes(size, order)  # type: ignore[arg-type]
    elif op == "segment" and (parts := segments(bytes(d))):
        i = draw(st.integers(0, len(parts) - 1))
        start, end = parts[i]
        how = draw(st.sampled_from(["drop", "duplicate", "swap"]))
        if how == "drop":
            del d[start:end]
        elif how == "duplicate":
            d[end:end] = d[start:end]
        elif i + 1 < len(parts):
            nxt_start, nxt_end = parts[i + 1]
            d[start:nxt_end] = d[nxt_start:nxt_end] + d[start:end]
    elif op == "recrc":
        fix_png_crcs(d)
    return d


@st.composite
def mutants(draw: st.DrawFn, fmt: str) -> bytes:
    seed = draw(st.sampled_from(seeds()[fmt]))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        data = mutate(draw, data)
    if draw(st.integers(0, 9)) and len(data) >= MAGIC[fmt]:  # mostly: past the format check
        data[: MAGIC[fmt]] = seed[: MAGIC[fmt]]
    return bytes(data)


def check(blob: bytes) -> None:
    """The property: model input or BadImageError, within the time limit plus a margin."""
    start = time.perf_counter()
    try:
        arr, _ = preprocess_bytes(blob, SPEC, limits=LIMITS)
        assert arr.shape == (SPEC.size, SPEC.size, SPEC.channels)
    except BadImageError as exc:
        assert str(exc)
    took = time.perf_counter() - start
    assert took < LIMITS.max_decode_seconds + MARGIN_S, f"took {took:.2f} s"


# --------------------------------------------------------------------------- tests


def test_seeds_are_real_files_that_preprocess() -> None:
    for fmt, group in seeds().items():
        for blob in group:
            with Image.open(io.BytesIO(blob)) as img:
                assert img.format == fmt
            preprocess_bytes(blob, SPEC, limits=LIMITS)
        assert any(header_fields(blob) for blob in group), fmt


@pytest.mark.parametrize("fmt", FORMATS)
@settings(
    max_examples=EXAMPLES or 60,
    derandomize=not EXAMPLES,
    database=None,
    deadline=timedelta(seconds=LIMITS.max_decode_seconds + MARGIN_S),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(data=st.data())
def test_mutated_files_fail_only_with_bad_image_error(fmt: str, data: st.DataObject) -> None:
    check(data.draw(mutants(fmt), label="mutant"))


def _jpeg_width_zero(blob: bytes) -> bytes:
    sof = next(start for start, _ in _jpeg_segments(blob) if blob[start + 1] == 0xC0)
    return blob[: sof + 7] + b"\0\0" + blob[sof + 9 :]


#: What fuzzing found, kept. Nothing escaped as another exception, crashed or ran long
#: (besides the default runs: 120,000 random examples, 20,000 per format, Pillow 13.0.0);
#: but a file whose magic bytes name a format while its header cannot be parsed (Pillow
#: then reports "unidentified") was called "not an image", which misleads a merchant
#: whose upload is a damaged photo. Each entry: seed format and index, how the input is
#: made from it, the reason `decode` must give.
REGRESSIONS: list[tuple[str, int, Callable[[bytes], bytes], str]] = [
    # a bit flipped in IHDR's width: the chunk CRC no longer matches
    ("PNG", 0, lambda b: b[:17] + bytes([b[17] ^ 1]) + b[18:], "corrupt PNG: its header"),
    # the first IFD offset points past the end of the file
    ("TIFF", 0, lambda b: b[:4] + b"\xff\xff\xff\x7f" + b[8:], "corrupt TIFF: its header"),
    # SOF0 says the image is 0 pixels wide
    ("JPEG", 0, _jpeg_width_zero, "corrupt JPEG: its header"),
]


@pytest.mark.parametrize(
    ("fmt", "index", "make", "reason"), REGRESSIONS, ids=["png-ihdr", "tiff-ifd", "jpeg-sof"]
)
def test_regressions(fmt: str, index: int, make: Callable[[bytes], bytes], reason: str) -> None:
    blob = make(seeds()[fmt][index])
    check(blob)
    with pytest.raises(BadImageError, match=reason):
        preprocess_bytes(blob, SPEC, limits=LIMITS)
