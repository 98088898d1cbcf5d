"""What `vitrine forget` may delete, and what vitrine never keeps in the first place.

Path safety: only files vitrine's API or CLI wrote under the upload directory, named by
the exact URI vitrine wrote, and only when no remaining row names them. Privacy: EXIF
(GPS position, camera serial) never reaches what the worker stores, and the README's
list of stored columns is the schema's, table by table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vitrine.db.schema import metadata
from vitrine.ops.api_uploads import merchant_folder
from vitrine.ops.errors import UserError
from vitrine.ops.forget import _scope, files_to_remove, owned_upload, remove_files
from vitrine.pipeline.inference.preprocess import prepare_photo
from vitrine.pipeline.types import ImageLimits, PreprocessSpec

ROOT = Path(__file__).resolve().parents[2]


def _api_file(uploads: Path, data: bytes, merchant: str | None = "m-1") -> Path:
    """Where `vitrine.ops.api_uploads.queue_photo` stores `data` for `merchant`
    (None: where it did before photos were kept per merchant)."""
    digest = hashlib.sha256(data).hexdigest()
    folder = uploads / "api" if merchant is None else uploads / "api" / merchant_folder(merchant)
    path = folder / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _staged_file(uploads: Path, name: str = "shirt.jpg", key: str = "0123456789abcdef" * 2) -> Path:
    """Where `vitrine.ops.uploads.stage_local_files` puts a file: staged/<32 hex>/<name> (16 hex
    before staged folders were keyed)."""
    path = uploads / "staged" / key / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"staged")
    return path


@pytest.fixture()
def uploads(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "uploads"
    root.mkdir(parents=True)
    return root


def test_vitrines_own_files_are_recognised(uploads: Path) -> None:
    api = _api_file(uploads, b"photo")
    older_api = _api_file(uploads, b"photo", merchant=None)
    staged = _staged_file(uploads)
    older_staged = _staged_file(uploads, key="0123456789abcdef")
    odd_name = _staged_file(uploads, "Hemd blau 100%.jpg")  # as_uri percent-encodes it
    for path in (api, older_api, staged, older_staged, odd_name):
        assert owned_upload(path.resolve().as_uri(), uploads) == path.resolve()


def test_nothing_outside_the_upload_directory(uploads: Path, tmp_path: Path) -> None:
    mine = tmp_path / "merchant" / "photos" / "shirt.jpg"  # the merchant's own file
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"theirs")
    look_alike = tmp_path / "elsewhere" / "api" / "ab" / ("ab" + "0" * 62)
    look_alike.parent.mkdir(parents=True)
    look_alike.write_bytes(b"x")
    api = _api_file(uploads, b"photo")
    for uri in (
        mine.as_uri(),
        look_alike.as_uri(),
        "https://cdn.example.com/shirt.jpg",
        "s3://bucket/shirt.jpg",
        "file:relative/path.jpg",
        # `..` and other spellings of a path inside: not the URI vitrine wrote
        (uploads / "api" / ".." / ".." / "merchant" / "photos" / "shirt.jpg").as_uri(),
        f"file://{api.parent}/../{api.parent.name}/{api.name}",
        "file://" + str(api).replace("/", "//"),
        uploads.as_uri(),
        (uploads / "api").as_uri(),
    ):
        assert owned_upload(uri, uploads) is None, uri


def test_only_the_layouts_vitrine_writes(uploads: Path) -> None:
    odd = [
        uploads / "api" / "zz" / ("ab" + "0" * 62),  # fan-out folder is not the name's prefix
        uploads / "api" / "ab" / "not-a-digest.jpg",
        uploads / "api" / ("ab" + "0" * 62),  # no fan-out folder
        uploads / "api" / "not-a-merchant-key" / "ab" / ("ab" + "0" * 62),
        uploads / "staged" / ("0" * 24) / "shirt.jpg",  # neither 16 nor 32 hex
        uploads / "staged" / "not-hex" / "shirt.jpg",
        uploads / "staged" / "shirt.jpg",
        uploads / "other" / "0123456789abcdef" / "shirt.jpg",
        uploads / "notes.txt",
    ]
    for path in odd:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        assert owned_upload(path.as_uri(), uploads) is None, path


def test_symlinks_are_never_followed_out(uploads: Path, tmp_path: Path) -> None:
    target = tmp_path / "merchant-original.jpg"
    target.write_bytes(b"theirs")
    link = uploads / "staged" / "0123456789abcdef" / "shirt.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    assert owned_upload(link.as_uri(), uploads) is None
    # A whole upload directory reached through a symlink: its real path is what counts.
    alias = tmp_path / "alias"
    alias.symlink_to(uploads)
    api = _api_file(uploads, b"photo")
    assert owned_upload((alias / api.relative_to(uploads)).as_uri(), uploads) is None
    assert owned_upload(api.as_uri(), alias) == api


def test_shared_files_stay_and_unshared_ones_go(uploads: Path, tmp_path: Path) -> None:
    shared = _api_file(uploads, b"same photo, two merchants")
    alone = _api_file(uploads, b"only this merchant")
    staged = _staged_file(uploads)
    missing = uploads / "api" / "cd" / ("cd" + "1" * 62)  # already gone: not counted
    owned = {p.as_uri(): p for p in (shared, alone, staged, missing)}
    doomed = files_to_remove(owned, still_named={shared.as_uri()})
    assert sorted(doomed) == sorted([alone, staged])
    assert remove_files(doomed) == 2
    assert shared.read_bytes() == b"same photo, two merchants"
    assert not alone.exists() and not staged.exists()
    assert not staged.parent.exists()  # the staged file's own folder goes with it
    assert alone.parent.is_dir()  # the API's fan-out folder is shared: kept
    assert remove_files(doomed) == 0  # a second run finds nothing


def test_removing_a_staged_hard_link_keeps_the_original(uploads: Path, tmp_path: Path) -> None:
    original = tmp_path / "merchant" / "shirt.jpg"
    original.parent.mkdir()
    original.write_bytes(b"theirs")
    staged = uploads / "staged" / "0123456789abcdef" / "shirt.jpg"
    staged.parent.mkdir(parents=True)
    os.link(original, staged)  # what stage_local_files does on one file system
    path = owned_upload(staged.as_uri(), uploads)
    assert path is not None and remove_files([path]) == 1
    assert original.read_bytes() == b"theirs"


@pytest.mark.parametrize(
    ("merchant", "image", "message"),
    [
        (None, None, "exactly one"),
        ("m-1", 3, "exactly one"),
        ("  ", None, "must not be empty"),
        (None, 0, "positive"),
    ],
)
def test_forget_names_exactly_one_target(
    merchant: str | None, image: int | None, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _scope(merchant, image)
    assert _scope("m-1", None) == ("merchant", "m-1")
    assert _scope(None, 7) == ("image", "7")


# --------------------------------------------------------------------------- EXIF

SERIAL = "SN-4711-PRIVATE"
OWNER = "Alice Example"
GPS_IFD, EXIF_IFD = 0x8825, 0x8769


def _jpeg(exif: Image.Exif | None) -> bytes:
    rng = np.random.default_rng(3)
    pixels = np.full((300, 240, 3), 255, dtype=np.uint8)
    pixels[60:240, 50:190] = rng.integers(20, 120, size=(180, 140, 3), dtype=np.uint8)
    out = io.BytesIO()
    extra = {} if exif is None else {"exif": exif.tobytes()}
    Image.fromarray(pixels).save(out, "JPEG", quality=90, **extra)
    return out.getvalue()


def _private_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 12 Pro"  # Model
    exif[0x013B] = OWNER  # Artist
    exif[0x0132] = "2026:11:28 09:41:00"  # DateTime
    exif.get_ifd(EXIF_IFD)[0xA431] = SERIAL  # BodySerialNumber
    exif.get_ifd(EXIF_IFD)[0xA435] = "LENS-99887766"  # LensSerialNumber
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.7)  # GPSLatitudeRef, GPSLatitude
    gps[3], gps[4] = "E", (2.0, 17.0, 40.2)  # GPSLongitudeRef, GPSLongitude
    return exif


def _all_values(obj: object) -> list[object]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [v for f in dataclasses.fields(obj) for v in _all_values(getattr(obj, f.name))]
    return [obj]


def test_exif_gps_and_serial_never_reach_what_is_stored() -> None:
    with_exif, without = _jpeg(_private_exif()), _jpeg(None)
    # The test photo really carries them (so the check below means something)...
    seen = Image.open(io.BytesIO(with_exif)).getexif()
    assert seen.get_ifd(EXIF_IFD)[0xA431] == SERIAL and seen.get_ifd(GPS_IFD)[1] == "N"
    assert SERIAL.encode() in with_exif

    # ...and the worker's preprocessing, with every measurement it stores switched on,
    # hands the database nothing of them: the info equals that of the same pixels without
    # EXIF, except the hash of the bytes, which cannot be read back into EXIF.
    flags: dict[str, Any] = {
        name: True
        for name in inspect.signature(prepare_photo).parameters
        if name.startswith("with_")
    }
    assert {"with_phash", "with_quality"} <= set(flags)
    spec, limits = PreprocessSpec(), ImageLimits(max_bytes=1 << 24, max_pixels=1 << 26)
    photo = prepare_photo(with_exif, spec, limits=limits, **flags)
    plain = prepare_photo(without, spec, limits=limits, **flags)
    (array, info), (plain_array, plain_info) = (photo.array, photo.info), (plain.array, plain.info)
    assert info.sha256 == hashlib.sha256(with_exif).hexdigest()
    assert dataclasses.replace(info, sha256="") == dataclasses.replace(plain_info, sha256="")
    assert np.array_equal(array, plain_array)
    stored = " ".join(repr(v) for v in _all_values(info))
    for secret in (SERIAL, OWNER, "PhoneMaker", "Phone 12", "LENS-99887766", "48.0", "29.7"):
        assert secret not in stored


def test_no_column_can_hold_exif() -> None:
    words = "exif|gps|lat|latitude|lon|longitude|serial|camera|make|lens|artist|orientation"
    suspicious = re.compile(rf"(^|_)({words})(_|$)")
    for table in metadata.tables.values():
        for column in table.columns:
            assert not suspicious.search(column.name), f"{table.name}.{column.name}"


def _readme_columns() -> dict[str, set[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What vitrine keeps about an image", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, set[str]] = {}
    for row in section.splitlines():
        cells = row.split("|")
        if not row.startswith("| `") or len(cells) < 4:
            continue
        table = cells[1].strip().strip("`")
        listed[table] = set(re.findall(r"`([a-z_0-9]+)`", cells[2]))
    return listed


def test_readme_lists_every_stored_column() -> None:
    """The README's statement of what is kept is the schema, not a summary of it."""
    listed = _readme_columns()
    schema = {name: {c.name for c in table.columns} for name, table in metadata.tables.items()}
    assert {t: listed.get(t) for t in schema} == schema
