"""The item page's heat map against a real `vitrine serve`, PostgreSQL and the worker: made
once through the API's model, then sent from disk or revalidated; a merchant's session
reaches its own images only; a photo the workers' rules refuse is the one fixed 404;
`vitrine forget` erases the cached picture with the image.

`-s` prints the time of the first picture and of a cached one, as the browser sees them.
"""

# ruff: noqa: F811  (the `api` fixture is imported from test_api.py and named by the tests)
from __future__ import annotations

import io
import tempfile
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from tests.integration.test_api import _auth, _token, _wait_done, api  # noqa: F401  (fixture)
from vitrine.ops.uploads import register_uploads
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration


def _desk(base: str, token: str) -> httpx.Client:
    """A logged-in desk session, as a browser holds it."""
    client = httpx.Client(base_url=base, headers={"Origin": base}, timeout=60)
    assert client.post("/desk/login", data={"token": token}).status_code == 303
    return client


def test_the_item_pages_heat_map(  # type: ignore[no-untyped-def]
    api, pipeline_env, engine: Engine, catalog
) -> None:
    suffix = str(time.monotonic_ns())
    platform = _token(pipeline_env, f"heat-{suffix}")
    other = _token(pipeline_env, f"heat-other-{suffix}", "--merchant", "m-heat-other")
    directory, _ = catalog
    photo = sorted(directory.glob("*.jpg"))[5]
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=_auth(platform),
        json={"uri": photo.as_uri(), "merchant_id": "m-heat"},
    )
    assert sent.status_code == 202, sent.text
    image = _wait_done(api, platform, sent.json())
    image_id = image["id"]
    with engine.connect() as conn:
        sha256 = conn.execute(text("SELECT sha256 FROM images WHERE id = :i"), {"i": image_id})
        tag = str(sha256.scalar_one())[:16]
    url = f"/desk/items/{image_id}/heat.png"
    cache = Path(pipeline_env["VITRINE_DATA_DIR"]) / "desk-heat"

    with closing(_desk(api, platform)) as desk:
        started = time.perf_counter()
        first = desk.get(url)
        made_in = time.perf_counter() - started
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/png"
        assert first.headers["cache-control"].startswith("private, max-age=")
        with Image.open(io.BytesIO(first.content)) as picture:
            assert picture.format == "PNG" and 360 <= picture.width <= 480
        started = time.perf_counter()
        again = desk.get(url)
        sent_in = time.perf_counter() - started
        assert again.status_code == 200 and again.content == first.content
        etag = first.headers["etag"]
        unchanged = desk.get(url, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag
    (kept,) = cache.rglob(f"{image_id}-*.png")
    assert kept.read_bytes() == first.content and f"{image_id}-{tag}-" in kept.name
    print(f"\nheat map of image {image_id}: first {made_in:.2f} s, cached {sent_in * 1000:.1f} ms")

    with closing(_desk(api, other)) as merchant:  # another merchant's image: not even seen
        foreign = merchant.get(url)
        assert foreign.status_code == 404 and f"no image {image_id}" in foreign.text
    anonymous = httpx.get(f"{api}{url}")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/desk/login"

    # rows a producer wrote: outside the file roots, a folder, not a photo
    outside = Path(tempfile.mkdtemp(prefix="vitrine-heat-outside-"))
    (outside / "secret.jpg").write_bytes(photo.read_bytes())
    junk = photo.parent / f"junk-{suffix}.jpg"
    junk.write_bytes(b"no photo here")
    uris = [(outside / "secret.jpg").as_uri(), outside.as_uri(), junk.as_uri()]
    hostile = [r.image_id for r in register_uploads(engine, [Upload(u, "m-heat") for u in uris])]
    with closing(_desk(api, platform)) as desk:
        answers = {
            (a.status_code, a.text.replace(f"image {i} ", "image N "))
            for i in hostile
            for a in [desk.get(f"/desk/items/{i}/heat.png")]
        }
    assert len(answers) == 1, answers  # the same answer, whatever the reason
    ((status, said),) = answers
    assert status == 404 and "the photo of image N is not available" in said
    assert "secret" not in said and str(outside) not in said
    assert not [p for i in hostile for p in cache.rglob(f"{i}-*.png")]

    erased = vitrine(pipeline_env, "forget", "--image", str(image_id), timeout=120)
    assert erased.returncode == 0, erased.stderr[-2000:]
    assert not list(cache.rglob(f"{image_id}-*.png"))
