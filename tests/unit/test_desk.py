"""The review desk's pieces that need no server: escaping, form tokens, thumbnails."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from vitrine.api.desk import page
from vitrine.api.desk_session import Session, form_token
from vitrine.db.types import ApiClient
from vitrine.ops.errors import UserError
from vitrine.ops.thumbnails import drop_thumbnails, shrink, thumbnail_path
from vitrine.pipeline.types import ImageLimits

LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000, max_decode_seconds=5.0)

EVIL = '<script>alert("x")</script>'


#: What `vitrine.api.desk_pages.choices` gives every page's layout.
MENUS = {"merchants": ["m"], "labels": ["Coat", "Bag"], "open_queues": [], "counts": {}}


def _session(name: str = "ann") -> Session:
    client = ApiClient(1, name, None, datetime.now(UTC), None)
    return Session(client, form_token("session-id"), b"\0" * 32)


def test_every_value_is_escaped_in_the_pages() -> None:
    item = {"image_id": 7, "label": EVIL, "confidence": 0.5, "merchant_id": EVIL, "sku": EVIL}
    html = page(
        "grid.html",
        _session(EVIL),
        items=[item],
        more=True,
        total=1,
        merchant=EVIL,
        label=EVIL,
        sku=EVIL,
        merchants=[EVIL],
        labels=[EVIL],
        open_queues=["quality"],
        counts={"quality": 1},
    ).body.decode()
    assert EVIL not in html and "&lt;script&gt;" in html
    queue = page(
        "queue.html",
        _session(),
        name="quality",
        items=[{**item, "reason": EVIL}],
        next_after="",
        below=0.6,
        back='"/><script>',
        merchants=[],
        labels=["a"],
        open_queues=[],
        counts={"quality": 1},
    ).body.decode()
    assert EVIL not in queue and '"/><script>' not in queue
    assert 'name="form_token" value="' + form_token("session-id") + '"' in queue


def test_a_tile_says_what_its_number_is() -> None:
    """A model's label shows its confidence; "unknown" its unknown score, never the
    confidence of a best guess no one reads; a person's decision no number at all."""
    tiles = [
        {
            "image_id": 1,
            "label": "Coat",
            "label_source": "model",
            "confidence": 0.97,
            "unknown_score": 0.2,
            "merchant_id": "m",
            "sku": None,
        },
        {
            "image_id": 2,
            "label": "unknown",
            "label_source": "model",
            "confidence": 0.999,
            "unknown_score": 0.53,
            "merchant_id": "m",
            "sku": None,
        },
        {
            "image_id": 3,
            "label": "Bag",
            "label_source": "person",
            "confidence": 0.88,
            "unknown_score": 0.1,
            "merchant_id": "m",
            "sku": None,
        },
    ]
    html = page(
        "grid.html",
        _session(),
        items=tiles,
        more=False,
        total=3,
        merchant="",
        label="",
        sku="",
        **MENUS,
    ).body.decode()
    first, second, third = html.split('class="tile"')[1:]
    assert "confidence 0.97" in first
    assert "unknown score 0.53" in second and "confidence" not in second
    assert "by a person" in third and "0.88" not in third
    assert "<option>unknown</option>" in html  # the label filter offers it


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


def test_form_tokens_are_per_session_and_hide_the_session_id() -> None:
    one, two = form_token("session-a"), form_token("session-b")
    assert one == form_token("session-a") and one != two
    assert "session-a" not in one and len(one) == 64


def test_thumbnails_are_upright_small_jpegs() -> None:
    wide = Image.new("RGB", (1200, 600), "white")
    exif = wide.getexif()
    exif[0x0112] = 6  # rotated: stands upright as 600 x 1200
    buf = io.BytesIO()
    wide.save(buf, "JPEG", exif=exif)
    small = Image.open(io.BytesIO(shrink(buf.getvalue(), 240, LIMITS)))
    assert small.format == "JPEG" and small.size == (120, 240)
    with pytest.raises(UserError):
        shrink(b"not an image", 240, LIMITS)


def test_thumbnails_keep_the_workers_image_limits() -> None:
    """A photo the workers refuse is never thumbnailed: a decompression bomb (a tiny PNG
    of 144 Mpx), and formats outside the workers' short list (PCX, TGA, SGI)."""
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx in a few kB
    assert len(bomb.getvalue()) < 200_000
    with pytest.raises(UserError, match="Mpx"):
        shrink(bomb.getvalue(), 240, LIMITS)
    for fmt in ("PCX", "TGA", "SGI"):
        odd = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(odd, fmt)
        with pytest.raises(UserError, match="not an image|unrecognised"):
            shrink(odd.getvalue(), 240, LIMITS)


def test_cut_outs_are_thumbnailed_on_white_as_the_model_sees_them() -> None:
    cut_out = Image.new("RGBA", (300, 300), (0, 0, 0, 0))  # transparent black around ...
    cut_out.paste((200, 30, 30, 255), (100, 100, 200, 200))  # ... a red product
    buf = io.BytesIO()
    cut_out.save(buf, "PNG")
    small = Image.open(io.BytesIO(shrink(buf.getvalue(), 240, LIMITS))).convert("RGB")
    assert min(small.getpixel((5, 5))) > 245  # the backdrop is white, never black
    assert small.getpixel((120, 120))[0] > 150


def test_thumbnail_names_follow_the_bytes() -> None:
    ctx = SimpleNamespace(settings=SimpleNamespace(data_dir=Path("/data")))
    a = thumbnail_path(ctx, key=258, sha256="ab" * 32, size="s")  # type: ignore[arg-type]
    b = thumbnail_path(ctx, key=258, sha256="cd" * 32, size="s")  # type: ignore[arg-type]
    assert a != b and a.parent == Path("/data/desk-thumbs/02") and a.name.endswith("-s.jpg")
    review = thumbnail_path(ctx, key=258, sha256=None, size="s", kind="reviews")  # type: ignore[arg-type]
    assert review.parent == Path("/data/desk-thumbs/reviews/02")  # review ids: another sequence


def test_forgetting_an_image_drops_its_thumbnails(tmp_path: Path) -> None:
    ctx = SimpleNamespace(settings=SimpleNamespace(data_dir=tmp_path))
    kept = []
    for image_id, size in ((12, "s"), (12, "m"), (123, "s"), (268, "s")):
        path = thumbnail_path(ctx, key=image_id, sha256="ab" * 32, size=size)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"jpeg")
        kept.append(path)
    assert drop_thumbnails(ctx, [12, 999]) == 2  # type: ignore[arg-type]
    assert [p.exists() for p in kept] == [False, False, True, True]


def test_pairs_show_both_sides_with_what_links_them_all_escaped() -> None:
    side = {"label": EVIL, "label_source": "model", "confidence": 0.9, "merchant_id": EVIL}
    left, right = {**side, "image_id": 4, "sku": EVIL}, {**side, "image_id": 9, "sku": "S-9"}
    pairs = [{"left": left, "right": right, "reason": "phash", "distance": 3}]
    html = page(
        "pairs.html",
        _session(),
        name="duplicates",
        pairs=pairs,
        next_after="4-9",
        back="/desk/queues/duplicates",
        **{**MENUS, "counts": {"duplicates": 1}},
    ).body.decode()
    assert EVIL not in html
    assert "/desk/photos/4/s.jpg" in html and "/desk/photos/9/s.jpg" in html
    assert "distance <b>3 bits</b>" in html and "SKU S-9" in html and "1 pair waiting" in html
    for decision in ('value="not_duplicate"', 'value="same_product"', 'name="delist" value="9"'):
        assert decision in html
    assert 'href="/desk/queues/duplicates?after=4-9"' in html
    review = {
        "review_id": 5,
        "review_ref": EVIL,
        "label": "Bag",
        "confidence": 0.8,
        "listing_label": "Sneaker",
        "match_score": 0.12,
        "reasons": ["low_match", "other_class"],
        "listing": left,
    }
    html = page(
        "pairs.html",
        _session(),
        name="review_mismatches",
        reviews=[review],
        next_after="",
        back="/desk/queues/review_mismatches",
        **{**MENUS, "counts": {"review_mismatches": 2}},
    ).body.decode()
    assert EVIL not in html and "/desk/reviews/5/s.jpg" in html
    assert "match score <b>0.12</b>" in html and "the listing is Sneaker" in html
    assert 'value="matches"' in html and 'value="does_not_match"' in html


def test_scores_and_distances_are_labelled_as_what_they_are() -> None:
    found = SimpleNamespace(
        label="Bag",
        confidence=0.93,
        neighbours=[{"image_id": 3, "label": "Bag", "distance": 0.06, "merchant_id": "m"}],
    )
    html = page("search.html", _session(), found=found, problem="", **MENUS).body.decode()
    assert "confidence 0.93" in html and "distance 0.060" in html
    assert "Bag 0.06" not in html  # a bare number next to a label is what confused people


def test_errors_are_pages_in_the_desks_style() -> None:
    from starlette.requests import Request

    from vitrine.api.errors import answer

    def request(path: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": path, "headers": []})

    shown = answer(request("/desk/items/4"), 404, f"no image 4 {EVIL}")
    html = shown.body.decode()  # type: ignore[union-attr]
    assert shown.status_code == 404 and shown.media_type == "text/html"
    assert "Not found" in html and "no image 4" in html and EVIL not in html
    assert answer(request("/desk"), 503, "down").status_code == 503
    redirect = answer(request("/desk/queues/x"), 303, "log in", {"Location": "/desk/login"})
    assert redirect.status_code == 303 and redirect.headers["location"] == "/desk/login"
    api = answer(request("/v1/images/4"), 404, "no image 4")
    assert api.media_type == "application/json"  # the API keeps its JSON
    problem = page(
        "search.html", _session(), 422, found=None, problem="Choose a photo first.", **MENUS
    )
    assert problem.status_code == 422 and "Choose a photo first." in problem.body.decode()


def test_a_decision_goes_back_only_to_a_desk_page() -> None:
    from vitrine.api.desk_decisions import _back

    for evil in ("https://evil.example/desk", "//evil.example/desk", "/v1/images", "javascript:x"):
        assert _back({"back": evil}).headers["location"] == "/desk"
    kept = "/desk/queues/quality?after=12&below=0.6"
    assert _back({"back": kept}).headers["location"] == kept


def test_a_database_that_is_down_is_a_503_page_for_people_and_json_for_the_api() -> None:
    import asyncio

    import httpx
    from fastapi import FastAPI
    from sqlalchemy.exc import OperationalError

    from vitrine.api import desk, errors

    class Down:
        def connect(self) -> None:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    app = FastAPI()
    app.state.ctx = SimpleNamespace(engine=lambda: Down())
    errors.install(app)
    app.include_router(desk.router)

    @app.get("/v1/probe")
    def probe() -> None:
        Down().connect()

    async def fetch() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", cookies={"vitrine_desk": "a-session"}
        ) as c:
            page = await c.get("/desk")
            return page, await c.get("/v1/probe")

    page, api = asyncio.run(fetch())
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "cannot reach its database" in page.text and "nothing you decided was lost" in page.text
    assert api.status_code == 503 and api.json() == {
        "error": "the database is not answering; try again in a minute"
    }


def test_queue_counts_are_fresh_for_the_queue_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The menu's counts are kept a few seconds per merchant scope; the queue being worked
    is counted on every page."""
    from vitrine.api import desk_pages

    waiting = {"quality": 5, "duplicates": 2}
    counted: list[str] = []

    def count(conn: object, queue: str, below: float = 0.6) -> int:
        counted.append(queue)
        return waiting[queue]

    monkeypatch.setattr(desk_pages, "count_queue", count)
    now = [100.0]
    monkeypatch.setattr(desk_pages.time, "monotonic", lambda: now[0])
    counts = desk_pages.QueueCounts(ttl_s=15)
    queues = ["quality", "duplicates"]
    assert counts.get(None, "m", queues) == {"quality": 5, "duplicates": 2}  # type: ignore[arg-type]
    waiting.update(quality=4, duplicates=1)
    counted.clear()
    assert counts.get(None, "m", queues, fresh="quality") == {"quality": 4, "duplicates": 2}  # type: ignore[arg-type]
    assert counted == ["quality"]  # only the queue on the page was counted again
    assert counts.get(None, "other", queues)["duplicates"] == 1  # type: ignore[arg-type]  # per scope
    now[0] += 16
    assert counts.get(None, "m", queues) == {"quality": 4, "duplicates": 1}  # type: ignore[arg-type]
