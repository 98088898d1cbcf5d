"""The review desk's pieces that need no server: escaping, form tokens, thumbnails."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from api.desk import page
from api.desk_session import Session, form_token
from db.types import ApiClient
from ops.errors import UserError
from ops.thumbnails import drop_thumbnails, shrink, thumbnail_path

EVIL = '<script>alert("x")</script>'


def _session(name: str = "ann") -> Session:
    client = ApiClient(1, name, None, datetime.now(UTC), None)
    return Session(client, form_token("vt_secret"))


def test_every_value_is_escaped_in_the_pages() -> None:
    item = {"image_id": 7, "label": EVIL, "confidence": 0.5, "merchant_id": EVIL, "sku": EVIL}
    html = page(
        "grid.html", _session(EVIL), items=[item], more=True, merchant=EVIL, label=EVIL,
        merchants=[EVIL], labels=[EVIL], open_queues=["quality"],
    ).body.decode()  # fmt: skip
    assert EVIL not in html and "&lt;script&gt;" in html
    queue = page(
        "queue.html", _session(), name="quality", items=[{**item, "reason": EVIL}], more=False,
        after=0, below=0.6, back='"/><script>', merchants=[], labels=["a"], open_queues=[],
    ).body.decode()  # fmt: skip
    assert EVIL not in queue and '"/><script>' not in queue
    assert 'name="form_token" value="' + form_token("vt_secret") + '"' in queue


def test_pages_forbid_inline_scripts_and_framing() -> None:
    answer = page("login.html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["cache-control"] == "no-store"
    templates = Path(__file__).resolve().parents[2] / "api" / "templates" / "desk"
    for html in templates.glob("*.html"):
        text = html.read_text()
        assert "<script>" not in text and " on" + "click=" not in text, html.name
        assert "|safe" not in text, html.name


def test_form_tokens_are_per_session_and_hide_the_token() -> None:
    one, two = form_token("vt_a"), form_token("vt_b")
    assert one == form_token("vt_a") and one != two
    assert "vt_a" not in one and len(one) == 64


def test_thumbnails_are_upright_small_jpegs() -> None:
    wide = Image.new("RGB", (1200, 600), "white")
    exif = wide.getexif()
    exif[0x0112] = 6  # rotated: stands upright as 600 x 1200
    buf = io.BytesIO()
    wide.save(buf, "JPEG", exif=exif)
    small = Image.open(io.BytesIO(shrink(buf.getvalue(), 240)))
    assert small.format == "JPEG" and small.size == (120, 240)
    with pytest.raises(UserError):
        shrink(b"not an image", 240)


def test_thumbnail_names_follow_the_bytes() -> None:
    ctx = SimpleNamespace(settings=SimpleNamespace(data_dir=Path("/data")))
    a = thumbnail_path(ctx, image_id=258, sha256="ab" * 32, size="s")  # type: ignore[arg-type]
    b = thumbnail_path(ctx, image_id=258, sha256="cd" * 32, size="s")  # type: ignore[arg-type]
    assert a != b and a.parent == Path("/data/desk-thumbs/02") and a.name.endswith("-s.jpg")


def test_forgetting_an_image_drops_its_thumbnails(tmp_path: Path) -> None:
    ctx = SimpleNamespace(settings=SimpleNamespace(data_dir=tmp_path))
    kept = []
    for image_id, size in ((12, "s"), (12, "m"), (123, "s"), (268, "s")):
        path = thumbnail_path(ctx, image_id=image_id, sha256="ab" * 32, size=size)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"jpeg")
        kept.append(path)
    assert drop_thumbnails(ctx, [12, 999]) == 2  # type: ignore[arg-type]
    assert [p.exists() for p in kept] == [False, False, True, True]
