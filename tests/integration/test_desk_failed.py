"""The review desk's failed uploads in a real headless browser: an upload whose source (a
loopback HTTP server of this test) answers 503 fails for real after its retries, shows on
/desk/failed with its reason, and one click sends it again; it is processed once the
source answers. A failure of the photo's own has no button, and a form sent for it
anyway is answered 409; another merchant sees neither.

This module runs its own `vitrine serve` and worker on a Redis database of their own, so
the worker's few quick retries (VITRINE_MAX_RETRIES=1) are the only ones, whatever other
worker the session runs.
"""

# ruff: noqa: F811  (the `browser` fixture is imported from test_desk.py and named by the tests)
from __future__ import annotations

import functools
import http.server
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import ALLOWED_HTTP_HOST
from tests.integration.test_api import _token, serving

# test_desk.py skips the module where there is no chromium, before selenium is needed here
from tests.integration.test_desk import By, _go, _log_in, _shot, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
#: Quick retries: a 503 source fails its upload after two tries, about a second apart.
WORKER_ENV = {
    "VITRINE_MAX_RETRIES": "1",
    "VITRINE_RETRY_BACKOFF_S": "1",
    "VITRINE_RETRY_BACKOFF_MAX_S": "1",
    "VITRINE_REAPER_INTERVAL_S": "0",  # nothing but this test sends uploads again
}
DEADLINE_S = 60


class Source:
    """What the loopback server answers: 503 (`failing`), else the photo, after waiting
    for `gate` while `holding` (so the test sees a fetch in flight)."""

    def __init__(self, photo: bytes) -> None:
        self.photo = photo
        self.failing = True
        self.holding = False
        self.gate = threading.Event()
        self.hits = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def __init__(self, *args: Any, source: Source, **kwargs: Any) -> None:
        self.source = source
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802
        source = self.source
        source.hits += 1
        if source.failing:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if source.holding:
            source.gate.wait(8)  # under the workers' fetch timeout (10 s)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(source.photo)))
        self.end_headers()
        self.wfile.write(source.photo)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def source(fashion_slice) -> Iterator[tuple[Source, str]]:  # type: ignore[no-untyped-def]
    """The loopback source and the URL of its photo."""
    photo = io.BytesIO()
    Image.fromarray(255 - fashion_slice.x_test[3]).resize((160, 160)).save(photo, "PNG")
    state = Source(photo.getvalue())
    handler = functools.partial(_Handler, source=state)
    server = http.server.ThreadingHTTPServer((ALLOWED_HTTP_HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://{ALLOWED_HTTP_HOST}:{server.server_address[1]}/p.png"
    finally:
        state.gate.set()
        server.shutdown()
        server.server_close()


def _own_redis_db(url: str) -> str:
    """The same Redis server, another of its databases: queues nobody else reads."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 7) % 16}"))


@pytest.fixture(scope="module")
def desk(pipeline_env, ctx) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A worker and `vitrine serve` on their own Redis database; the server's base URL."""
    from vitrine.embedded.launcher import running_worker
    from vitrine.embedded.services import ServiceURLs

    redis_url = _own_redis_db(pipeline_env["REDIS_URL"])
    env = dict(pipeline_env, REDIS_URL=redis_url, VITRINE_DESK_LOGIN_RATE="1000/minute")
    log = ctx.settings.data_dir / "logs" / "desk-failed-worker.log"
    urls = ServiceURLs(pipeline_env["DATABASE_URL"], redis_url)
    with (
        running_worker(urls, concurrency=1, log_path=log, extra_env=WORKER_ENV),
        serving(env, "test-desk-failed.log") as base,
    ):
        yield base


@pytest.fixture(scope="module")
def people(pipeline_env) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """name -> (merchant, token): two merchants' desk people."""
    suffix = str(time.monotonic_ns())
    made = {}
    for who in ("shop", "other"):
        merchant = f"m-failed-{who}-{suffix}"
        made[who] = (
            merchant,
            _token(pipeline_env, f"failed-{who}-{suffix}", "--merchant", merchant),
        )
    return made


def _upload(base: str, token: str, **fields: Any) -> int:
    """An upload through the API as its merchant sends it; the image id."""
    auth = {"Authorization": f"Bearer {token}"}
    if "photo" in fields:
        files = {"file": ("p.png", fields.pop("photo"), "image/png")}
        sent = httpx.post(f"{base}/v1/uploads", headers=auth, files=files, data=fields)
    else:
        sent = httpx.post(f"{base}/v1/uploads", headers=auth, json=fields)
    assert sent.status_code == 202, sent.text
    image_id: int = sent.json()["image_id"]
    return image_id


def _row(engine: Engine, image_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status, error, attempts FROM images WHERE id = :i"), {"i": image_id}
        ).one()


def _until(engine: Engine, image_id: int, wanted: Callable[[Any], bool], what: str) -> Any:
    """The row once `wanted` holds (a row changing status is a state we cannot subscribe
    to), within the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        row = _row(engine, image_id)
        if wanted(row):
            return row
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {row}"
        time.sleep(0.05)


def _logged_in(driver: Any, base: str, token: str) -> None:
    """Whoever was logged in before, log in with `token`."""
    driver.get(f"{base}/desk/login")
    driver.delete_all_cookies()
    _log_in(driver, base, token)


def test_transient_failures_are_shown_and_sent_again_from_the_page(  # type: ignore[no-untyped-def]
    desk, browser, people, source, engine
) -> None:
    state, url = source
    merchant, token = people["shop"]
    uris = [f"{url}?n={n}" for n in range(3)]  # a batch fetches one URI once
    ids = [
        _upload(desk, token, uri=u, merchant_id=merchant, sku=f"SKU-{n}")
        for n, u in enumerate(uris)
    ]
    for image_id in ids:
        failed = _until(engine, image_id, lambda r: r.status == "failed", "the tries to run out")
        assert failed.error.startswith("gave up after 2 tries: HTTP 503 fetching ")
    assert state.hits >= 2 * len(ids)

    _logged_in(browser, desk, token)
    browser.get(f"{desk}/desk/failed")
    assert browser.find_element(By.ID, "failed-count").text == "3"
    _shot(browser, "failed")
    first = ids[0]
    row = browser.find_element(By.ID, f"failed-{first}")
    assert "HTTP 503" in row.find_element(By.CLASS_NAME, "reason").text
    assert uris[0] in row.text and merchant in row.text and "SKU-0" in row.text
    link = row.find_element(By.TAG_NAME, "a").get_attribute("href")
    assert str(link).endswith(f"/desk/items/{first}")

    # the source recovers, slowly: its answer waits for the gate, so the row is seen in flight
    state.holding, state.failing = True, False
    _go(browser, row.find_element(By.CLASS_NAME, "resend"))
    assert "resent=1" in browser.current_url
    assert browser.find_element(By.ID, "resent").text == "1 upload sent again"
    assert f'id="failed-{first}"' not in browser.page_source
    assert browser.find_element(By.ID, "failed-count").text == "2"
    again = _until(engine, first, lambda r: r.status == "processing", "the worker to take it")
    assert again.error is None and again.attempts == 1  # counted afresh
    state.gate.set()
    done = _until(engine, first, lambda r: r.status == "done", "the upload to be processed")
    assert done.error is None and done.attempts == 1

    # the rest of the page at once
    _go(browser, browser.find_element(By.ID, "resend-all"))
    assert browser.find_element(By.ID, "resent").text == "2 uploads sent again"
    assert browser.find_element(By.ID, "failed-count").text == "0"
    for image_id in ids[1:]:
        done = _until(engine, image_id, lambda r: r.status == "done", "the rest to be processed")
        assert done.error is None and done.attempts == 1


def test_a_failure_of_its_own_has_no_button_and_is_refused(  # type: ignore[no-untyped-def]
    desk, browser, people, engine
) -> None:
    merchant, token = people["shop"]
    bad = _upload(desk, token, photo=b"plain text, not a photo", merchant_id=merchant)
    failed = _until(engine, bad, lambda r: r.status == "failed", "the upload to fail")
    assert not failed.error.startswith("gave up")

    _logged_in(browser, desk, token)
    browser.get(f"{desk}/desk/failed")
    row = browser.find_element(By.ID, f"failed-{bad}")
    assert failed.error.split(":")[0] in row.find_element(By.CLASS_NAME, "reason").text
    assert "upload:" in row.text  # the stored photo's URI as the API shows it: no path
    cells = str(row.get_attribute("innerHTML"))
    assert 'class="resend"' not in cells and "would fail again" in cells

    origin = {"Origin": desk}
    with (
        httpx.Client(base_url=desk, headers=origin) as shop,
        httpx.Client(base_url=desk, headers=origin) as other,
    ):
        assert shop.post("/desk/login", data={"token": token}).status_code == 303
        page = shop.get("/desk/failed").text
        form = page.split('name="form_token" value="')[1].split('"')[0]
        refused = shop.post(f"/desk/failed/{bad}/resend", data={"form_token": form})
        assert refused.status_code == 409 and "text/html" in refused.headers["content-type"]
        assert "would fail the same way" in refused.text and f'id="failed-{bad}"' in refused.text
        whole = shop.post("/desk/failed/resend", data={"form_token": form, "ids": str(bad)})
        assert whole.status_code == 409 and "none of the uploads" in whole.text
        forged = shop.post(f"/desk/failed/{bad}/resend", data={"form_token": "x"})
        assert forged.status_code == 403

        # another merchant neither sees it nor can send it
        assert other.post("/desk/login", data={"token": people["other"][1]}).status_code == 303
        theirs = other.get("/desk/failed").text
        assert f'id="failed-{bad}"' not in theirs and 'id="failed-count">0<' in theirs
        their_form = theirs.split('name="form_token" value="')[1].split('"')[0]
        hidden = other.post(f"/desk/failed/{bad}/resend", data={"form_token": their_form})
        assert hidden.status_code == 404
    assert _row(engine, bad).status == "failed"  # nothing was sent
