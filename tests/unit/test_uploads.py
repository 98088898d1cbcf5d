"""What `submit` and `ingest` make of the files, folders, URLs and manifests they are given."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vitrine.ops.errors import UserError
from vitrine.ops.uploads import collect_uploads, read_manifest


def _image(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path, fmt)
    return path


def test_urls_pass_through_and_files_become_file_uris(tmp_path: Path) -> None:
    photo = _image(tmp_path / "a.png")
    uploads = collect_uploads(
        ["https://cdn.example.com/p/1.jpg", str(photo), "http://img.example.com/2.webp"],
        merchant="m1",
    )
    assert [u.uri for u in uploads] == [
        "https://cdn.example.com/p/1.jpg",
        photo.resolve().as_uri(),
        "http://img.example.com/2.webp",
    ]
    assert {u.merchant_id for u in uploads} == {"m1"}


def test_folders_collect_every_decodable_format_recursively(tmp_path: Path) -> None:
    _image(tmp_path / "shop" / "b.jpg", "JPEG")
    _image(tmp_path / "shop" / "sub" / "c.webp", "WEBP")
    (tmp_path / "shop" / "d.avif").write_bytes(b"avif bytes: a bad one fails its own row")
    (tmp_path / "shop" / "notes.txt").write_text("not an image")
    uploads = collect_uploads([str(tmp_path / "shop")], merchant="m1")
    names = [Path(u.uri).name for u in uploads]
    assert names == ["b.jpg", "d.avif", "c.webp"]  # sorted by path: sub/ after the files


def test_a_folder_with_a_manifest_uses_its_rows(tmp_path: Path) -> None:
    _image(tmp_path / "shop" / "a.png")
    _image(tmp_path / "shop" / "b.png")
    _image(tmp_path / "shop" / "not-listed.png")
    (tmp_path / "shop" / "manifest.csv").write_text(
        "file,sku,merchant_id\na.png,SKU-A,merchant-07\nb.png,,\n"
    )
    given = collect_uploads([str(tmp_path / "shop")], merchant="m1")
    assert [(Path(u.uri).name, u.sku, u.merchant_id) for u in given] == [
        ("a.png", "SKU-A", "m1"),  # --merchant, when given, names the shop of every row
        ("b.png", None, "m1"),
    ]
    # without it each row names its own, and a row that names none is an error
    with pytest.raises(UserError, match="no merchant for .*b.png: give --merchant"):
        collect_uploads([str(tmp_path / "shop")], merchant=None)
    (tmp_path / "shop" / "manifest.csv").write_text(
        "file,sku,merchant_id\na.png,SKU-A,merchant-07\nb.png,,merchant-08\n"
    )
    rows = collect_uploads([str(tmp_path / "shop")], merchant=None)
    assert [u.merchant_id for u in rows] == ["merchant-07", "merchant-08"]


def test_declared_labels_from_the_manifest_or_the_option(tmp_path: Path) -> None:
    """0009: a manifest row's `declared_label` wins; `--declared-label` fills the rest."""
    _image(tmp_path / "shop" / "a.png")
    _image(tmp_path / "shop" / "b.png")
    (tmp_path / "shop" / "manifest.csv").write_text(
        "file,sku,declared_label\na.png,SKU-A, Dress \nb.png,SKU-B,\n"
    )
    rows = collect_uploads([str(tmp_path / "shop")], merchant="m1")
    assert [u.declared_label for u in rows] == ["Dress", None]
    filled = collect_uploads([str(tmp_path / "shop")], merchant="m1", declared_label="Bag")
    assert [(u.sku, u.declared_label) for u in filled] == [("SKU-A", "Dress"), ("SKU-B", "Bag")]
    one = collect_uploads(
        [str(tmp_path / "shop" / "a.png")],
        merchant="m1",
        sku="S",
        declared_label="any text",
    )
    assert [(u.sku, u.declared_label) for u in one] == [("S", "any text")]


def test_manifest_uri_column(tmp_path: Path) -> None:
    photo = _image(tmp_path / "x.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,sku\nhttps://cdn.example.com/1.jpg,S1\n{photo},S2\n")
    uploads = read_manifest(manifest)
    assert [(u.uri, u.sku) for u in uploads] == [
        ("https://cdn.example.com/1.jpg", "S1"),
        (photo.resolve().as_uri(), "S2"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,sku\na.png,S\n", "`file` or `uri` column"),
        ("file\n", "lists no images"),
        ("uri\nrelative/x.png\n", r"neither http\(s\)://"),
        ("file,sku\n,S\n", "names no file or uri"),
    ],
)
def test_bad_manifests(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    with pytest.raises(UserError, match=message):
        read_manifest(manifest)


def test_urls_are_checked_before_anything_is_queued(tmp_path: Path) -> None:
    for url, message in (
        ("http://exa%mple/x.jpg", "bad host"),
        ("ftp://x/y.jpg", "unsupported scheme 'ftp'"),
        ("https://shop.example:99999/x.jpg", "not a valid URL"),
        ("https:///x.jpg", "bad host"),
        ("gopher://127.0.0.1:70/", "unsupported scheme"),
    ):
        with pytest.raises(UserError, match=message) as caught:
            collect_uploads([url], merchant="m")
        assert "\n" not in str(caught.value) and "nothing was submitted" in str(caught.value)
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\nftp://x/y.jpg\n")
    with pytest.raises(UserError, match="m.csv:2: ftp://x/y.jpg: unsupported scheme"):
        read_manifest(manifest)
    (ok,) = collect_uploads(["https://xn--bcher-kva.example:8443/p/1.jpg?v=2"], merchant="m")
    assert ok.uri.startswith("https://xn--bcher-kva.example:8443/")


def test_each_upload_is_an_event_named_by_merchant_sku_and_file(tmp_path: Path) -> None:
    """The same command run again is the same events; another SKU or merchant is another."""
    photo = _image(tmp_path / "a.png")
    first = collect_uploads([str(photo)], merchant="acme", sku="SKU-1")[0].event_id
    assert first and first.startswith("cli:")
    assert collect_uploads([str(photo)], merchant="acme", sku="SKU-1")[0].event_id == first
    others = {
        collect_uploads([str(photo)], merchant="acme", sku="SKU-2")[0].event_id,
        collect_uploads([str(photo)], merchant="acme")[0].event_id,
        collect_uploads([str(photo)], merchant="other", sku="SKU-1")[0].event_id,
    }
    assert len(others) == 3 and first not in others


def test_sku_needs_exactly_one_image(tmp_path: Path) -> None:
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    (only,) = collect_uploads([str(a)], merchant="m", sku="S-1")
    assert only.sku == "S-1"
    with pytest.raises(UserError, match="--sku applies to one image"):
        collect_uploads([str(a), str(b)], merchant="m", sku="S-1")


def test_staged_folders_are_keyed_so_their_paths_cannot_be_guessed(tmp_path: Path) -> None:
    """The staged folder is an HMAC of the source path under a 0600 secret: the same
    file twice is one staged file, and sha256(path) (the old name) is not where it is."""
    import hashlib
    import stat

    from vitrine.ops.uploads import STAGING_KEY, stage_local_files
    from vitrine.pipeline.types import Upload
    from vitrine.sources.policy import SourcePolicy

    uploads, source = tmp_path / "uploads", _image(tmp_path / "mine" / "shirt.png")
    policy = SourcePolicy(file_roots=(uploads,))
    (first,) = stage_local_files([Upload(source.as_uri(), "m")], policy, uploads)
    (again,) = stage_local_files([Upload(source.as_uri(), "m")], policy, uploads)
    assert first.uri == again.uri and first.uri != source.as_uri()
    staged = Path(first.uri.removeprefix("file://"))
    assert staged.read_bytes() == source.read_bytes()
    folder = staged.parent.name
    assert len(folder) == 32 and folder != hashlib.sha256(str(source).encode()).hexdigest()[:32]
    assert stat.S_IMODE((uploads / STAGING_KEY).stat().st_mode) == 0o600
    for directory in (staged.parent, uploads / "staged", uploads):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750, directory
    other = tmp_path / "another-upload-dir"  # another key: another place
    (elsewhere,) = stage_local_files([Upload(source.as_uri(), "m")], policy, other)
    assert Path(elsewhere.uri).parent.name != folder


def test_files_vitrine_writes_are_0640_in_0750_folders(tmp_path: Path) -> None:
    import os
    import stat

    from vitrine.ops.uploads import private_dir, write_private

    uploads = tmp_path / "uploads"
    uploads.mkdir(mode=0o755)  # made by an older vitrine: tightened when written into
    old = os.umask(0o022)
    try:
        target = private_dir(uploads, uploads / "api" / "m" / "ab") / "abcd"
        write_private(target, b"photo")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"photo"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    for folder in (uploads, uploads / "api", uploads / "api" / "m", target.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    assert [p.name for p in target.parent.iterdir()] == ["abcd"]  # nothing half-written left
