"""What `submit` and `ingest` make of the files, folders, URLs and manifests they are given."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ops.errors import UserError
from ops.uploads import collect_uploads, read_manifest


def _image(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path, fmt)
    return path


def test_urls_pass_through_and_files_become_file_uris(tmp_path: Path) -> None:
    photo = _image(tmp_path / "a.png")
    uploads = collect_uploads(
        ["https://cdn.example.com/p/1.jpg", str(photo), "http://img.example.com/2.webp"],
        merchant="m1",
        manifest_merchants=False,
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
    uploads = collect_uploads([str(tmp_path / "shop")], merchant="m1", manifest_merchants=False)
    names = [Path(u.uri).name for u in uploads]
    assert names == ["b.jpg", "d.avif", "c.webp"]  # sorted by path: sub/ after the files


def test_a_folder_with_a_manifest_uses_its_rows(tmp_path: Path) -> None:
    _image(tmp_path / "shop" / "a.png")
    _image(tmp_path / "shop" / "b.png")
    _image(tmp_path / "shop" / "not-listed.png")
    (tmp_path / "shop" / "manifest.csv").write_text(
        "file,sku,merchant_id\na.png,SKU-A,merchant-07\nb.png,,\n"
    )
    submitted = collect_uploads([str(tmp_path / "shop")], merchant="m1", manifest_merchants=False)
    assert [(Path(u.uri).name, u.sku, u.merchant_id) for u in submitted] == [
        ("a.png", "SKU-A", "m1"),  # submit: --merchant names the shop for every row
        ("b.png", None, "m1"),
    ]
    ingested = collect_uploads([str(tmp_path / "shop")], merchant="m1", manifest_merchants=True)
    assert [u.merchant_id for u in ingested] == ["merchant-07", "m1"]  # ingest: rows may


def test_declared_labels_from_the_manifest_or_the_option(tmp_path: Path) -> None:
    """0009: a manifest row's `declared_label` wins; `--declared-label` fills the rest."""
    _image(tmp_path / "shop" / "a.png")
    _image(tmp_path / "shop" / "b.png")
    (tmp_path / "shop" / "manifest.csv").write_text(
        "file,sku,declared_label\na.png,SKU-A, Dress \nb.png,SKU-B,\n"
    )
    rows = collect_uploads([str(tmp_path / "shop")], merchant="m1", manifest_merchants=False)
    assert [u.declared_label for u in rows] == ["Dress", None]
    filled = collect_uploads(
        [str(tmp_path / "shop")], merchant="m1", manifest_merchants=False, declared_label="Bag"
    )
    assert [(u.sku, u.declared_label) for u in filled] == [("SKU-A", "Dress"), ("SKU-B", "Bag")]
    one = collect_uploads(
        [str(tmp_path / "shop" / "a.png")], merchant="m1", sku="S", manifest_merchants=False,
        declared_label="any text",
    )  # fmt: skip
    assert [(u.sku, u.declared_label) for u in one] == [("S", "any text")]


def test_manifest_uri_column(tmp_path: Path) -> None:
    photo = _image(tmp_path / "x.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,sku\nhttps://cdn.example.com/1.jpg,S1\n{photo},S2\n")
    uploads = read_manifest(manifest, merchant="m1")
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
        read_manifest(manifest, merchant="m1")


def test_sku_needs_exactly_one_image(tmp_path: Path) -> None:
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    (only,) = collect_uploads([str(a)], merchant="m", sku="S-1", manifest_merchants=False)
    assert only.sku == "S-1"
    with pytest.raises(UserError, match="--sku applies to one image"):
        collect_uploads([str(a), str(b)], merchant="m", sku="S-1", manifest_merchants=False)
