"""The review desk in a real headless browser: Debian's chromium driven by Selenium through
/usr/bin/chromedriver, against a real `vitrine serve` on loopback, PostgreSQL, Redis and a
worker. A person logs in with an API token, browses, opens an item, searches by photo and
relabels and approves items from work queues; the decisions are checked in SQL.

Screenshots of the grid, an item and a queue are written to $VITRINE_DESK_SCREENSHOTS
when set (`VITRINE_DESK_SCREENSHOTS=docs make integration` refreshes the README's).
"""

# ruff: noqa: F811  (the `api` fixture is imported from test_api.py and named by the tests)
from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.test_api import _token, _wait_done, api  # noqa: F401  (fixture)

#: Debian's browser and driver (overridable, e.g. to check the skip line).
CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("VITRINE_CHROMEDRIVER", "/usr/bin/chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - the dev extra has it
    webdriver = None  # type: ignore[assignment]
if webdriver is None or not (Path(CHROMIUM).exists() and shutil.which(DRIVER)):
    pytest.skip(
        "tests/integration/test_desk.py (review desk in a browser) skipped: no chromium; "
        "enable with `apt-get install chromium chromium-driver` (and `pip install selenium`)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration
MERCHANT = "m-desk"


@pytest.fixture(scope="module")
def people(pipeline_env) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """name -> (client name, token): a platform merchandiser and a merchant's person."""
    suffix = str(time.monotonic_ns())
    made = {}
    for who, merchant in (("desk", ()), ("desk-acme", ("--merchant", "m-desk-acme"))):
        name = f"{who}-{suffix}"
        made[who] = (name, _token(pipeline_env, name, *merchant))
    return made


@pytest.fixture(scope="module")
def desk_photos(catalog, tmp_path_factory) -> list[Path]:  # type: ignore[no-untyped-def]
    """Ten catalog photos shrunk to 400 px, so every one fails the 1000 px rule and waits
    in the quality queue."""
    directory, _ = catalog
    small = tmp_path_factory.mktemp("desk")
    photos = []
    for photo in sorted(directory.glob("*.*"))[30:40]:
        with Image.open(photo) as img:
            img.thumbnail((400, 400))
            photos.append(small / f"{photo.stem}.png")
            img.save(photos[-1])
    return photos


@pytest.fixture(scope="module")
def stocked(api, people, desk_photos) -> list[int]:  # type: ignore[no-untyped-def]
    """`desk_photos` processed by the worker, eight for MERCHANT and two for another
    merchant; their ids in that order."""
    photos = desk_photos
    token = people["desk"][1]
    ids = []
    for n, photo in enumerate(photos):
        sent = httpx.post(
            f"{api}/v1/uploads",
            headers={"Authorization": f"Bearer {token}"},
            json={"uri": photo.as_uri(), "merchant_id": MERCHANT if n < 8 else "m-desk-acme"},
        )
        assert sent.status_code == 202, sent.text
        assert _wait_done(api, token, sent.json())["status"] == "done"
        ids.append(sent.json()["image_id"])
    return ids


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1100,820")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: webdriver.Chrome, name: str) -> None:
    """A small PNG (256 colours) of the page, if screenshots were asked for."""
    folder = os.environ.get("VITRINE_DESK_SCREENSHOTS")
    if not folder:
        return
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=128).save(Path(folder) / f"desk-{name}.png", optimize=True)


def _queue_has(engine: Engine, queue: str, image_id: int) -> bool:
    from vitrine.db import repository

    with engine.connect() as conn:
        waiting = repository.queue_items(conn, queue=queue, after=image_id - 1, limit=1, below=1)
    return bool(waiting) and waiting[0]["image_id"] == image_id


def _log_in(driver: webdriver.Chrome, base: str, token: str) -> None:
    driver.get(f"{base}/desk")
    assert driver.current_url.endswith("/desk/login")  # no session: the login form
    driver.find_element(By.ID, "token").send_keys(token)
    _go(driver, driver.find_element(By.ID, "login"))
    # the catalog itself, loaded (a CI run clicked its filter while the page still changed)
    _wait(
        driver,
        lambda d: (
            d.current_url.rstrip("/").endswith("/desk")
            and bool(d.find_elements(By.ID, "filter"))
            and d.execute_script("return document.readyState") == "complete"
        ),
    )


def _go(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click a link or button and wait for the page it leads to (a click does not)."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    _left(driver, page)


def _left(driver: webdriver.Chrome, page: WebElement) -> None:
    """Wait until the browser has left `page` (its root element is stale). Asked while
    the page is being torn down, chromedriver can answer "unhandled inspector error"
    instead of "stale" (seen in CI): that answer means "ask again", not a failure."""
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(staleness_of(page))


def _wait(driver: webdriver.Chrome, done: Callable[[webdriver.Chrome], bool]) -> None:
    """Until the page a click led to is there (a click does not wait for navigation)."""
    deadline = time.monotonic() + 15
    while not done(driver):
        assert time.monotonic() < deadline, (driver.current_url, driver.page_source[:2000])
        time.sleep(0.05)


def test_browse_open_relabel_and_approve_in_a_browser(  # type: ignore[no-untyped-def]
    api,
    browser,
    people,
    stocked,
    engine,
    desk_photos,
) -> None:
    name, token = people["desk"]
    _log_in(browser, api, token)
    Select(browser.find_element(By.ID, "merchant")).select_by_visible_text(MERCHANT)
    _go(browser, browser.find_element(By.ID, "filter"))
    tiles = browser.find_elements(By.CSS_SELECTOR, "#grid .tile")
    assert {t.get_attribute("id") for t in tiles} == {f"tile-{i}" for i in stocked[:8]}
    first = tiles[0].find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].naturalWidth", first) > 0  # thumbnail
    _shot(browser, "grid")

    # the quality queue: every stocked photo is small; relabel the first of ours
    _go(browser, browser.find_element(By.ID, "nav-quality"))
    assert browser.find_elements(By.CSS_SELECTOR, "#queue .row")
    target = stocked[0]
    browser.get(f"{api}/desk/queues/quality?after={target - 1}")  # ours, whatever ran before
    row = browser.find_element(By.ID, f"row-{target}")
    assert "longest side" in row.find_element(By.CLASS_NAME, "reason").text
    picker = Select(row.find_element(By.TAG_NAME, "select"))
    before = picker.first_selected_option.text
    new = next(o.text for o in picker.options if o.text != before)
    picker.select_by_visible_text(new)
    _go(browser, browser.find_element(By.CSS_SELECTOR, f"#row-{target} .relabel"))
    assert "/desk/queues/quality" in browser.current_url
    assert not browser.find_elements(By.ID, f"row-{target}")  # it left the queue
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT * FROM label_corrections WHERE image_id = :i"), {"i": target}
        ).one()
    assert (stored.action, stored.label, stored.previous_label) == ("relabel", new, before)
    assert (stored.queue, stored.decided_by) == ("quality", name) and stored.model_id
    assert not _queue_has(engine, "quality", target)
    assert not _queue_has(engine, "low_confidence", target)  # its label is a person's now

    # low confidence (every item is below 1.0): approve one; it leaves that queue only
    browser.get(f"{api}/desk/queues/low_confidence?below=1&after={target}")
    waiting = [r.get_attribute("id") for r in browser.find_elements(By.CSS_SELECTOR, "#queue .row")]
    other = next(i for i in stocked[1:8] if f"row-{i}" in waiting)
    _go(browser, browser.find_element(By.ID, f"row-{other}").find_element(By.CLASS_NAME, "approve"))
    assert not browser.find_elements(By.ID, f"row-{other}")
    with engine.connect() as conn:
        approved = conn.execute(
            text("SELECT action, label, previous_label FROM label_corrections WHERE image_id = :i"),
            {"i": other},
        ).one()
    assert approved.action == "approve" and approved.label == approved.previous_label
    assert _queue_has(engine, "quality", other)  # the photo is still too small

    # the item page: photo, top-k, quality verdict, neighbours, the decision just made
    browser.get(f"{api}/desk/items/{target}")
    assert "longest side" in browser.find_element(By.ID, "quality").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#topk tr")) >= 3
    # neighbours within VITRINE_SIMILAR_MAX_DISTANCE, or the page says none is that close
    # (which depends on what else the database holds when this module runs alone)
    tiles = browser.find_elements(By.CSS_SELECTOR, "#neighbours .tile")
    assert tiles or "No other item is close" in browser.find_element(By.ID, "no-neighbours").text
    assert f"relabelled {new}" in browser.find_element(By.ID, "history").text
    # the label people read is the person's, said as such; the model's own is shown apart
    assert new in browser.find_element(By.ID, "label-now").text
    assert "decided by a person" in browser.find_element(By.ID, "label-source").text
    assert before in browser.find_element(By.ID, "model-label").text
    assert browser.find_element(By.ID, "declared").text.startswith("—")
    assert browser.execute_script("return document.getElementById('photo').naturalWidth") > 0
    _shot(browser, "item")

    # search by photo: choosing a file submits the form (desk.js); the photo finds itself
    photo = desk_photos[2]
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, "drop-file").send_keys(str(photo))
    _left(browser, page)
    results = browser.find_elements(By.CSS_SELECTOR, "#results .tile a")
    found = [str(a.get_attribute("href")) for a in results[:3]]
    assert any(h.endswith(f"/desk/items/{stocked[2]}") for h in found), found

    # the session is the server's: the cookie is not the token, and after logging out
    # the same cookie, sent again by anyone, opens nothing
    cookie = browser.get_cookie("vitrine_desk")
    assert cookie is not None and token not in cookie["value"] and cookie["httpOnly"]
    _go(browser, browser.find_element(By.ID, "logout"))
    assert browser.current_url.endswith("/desk/login")
    replay = httpx.get(f"{api}/desk", cookies={"vitrine_desk": cookie["value"]})
    assert replay.status_code == 303 and replay.headers["location"] == "/desk/login?expired=1"


def test_sessions_are_scoped_and_forms_guarded(api, people, stocked) -> None:  # type: ignore[no-untyped-def]
    """Without a browser's help: the cookie's attributes, a merchant's narrower view, and
    the refusals of forged or foreign forms."""
    origin = {"Origin": api}
    with httpx.Client(base_url=api, headers=origin) as merchant:
        refused = merchant.post("/desk/login", data={"token": "vt_nope"})
        assert refused.status_code == 401 and "unknown or revoked" in refused.text
        logged = merchant.post("/desk/login", data={"token": people["desk-acme"][1]})
        assert logged.status_code == 303
        cookie = logged.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/desk" in cookie
        grid = merchant.get("/desk").text
        assert f'id="tile-{stocked[8]}"' in grid and f'id="tile-{stocked[3]}"' not in grid
        assert merchant.get(f"/desk/items/{stocked[3]}").status_code == 404
        assert merchant.get(f"/desk/photos/{stocked[3]}/s.jpg").status_code == 404
        thumb = merchant.get(f"/desk/photos/{stocked[8]}/s.jpg")
        assert thumb.status_code == 200 and "max-age" in thumb.headers["cache-control"]
        assert Image.open(io.BytesIO(thumb.content)).size[0] <= 240
        form = grid.split('name="form_token" value="')[1].split('"')[0]
        decide = f"/desk/items/{stocked[8]}/decision"
        body = {"form_token": form, "action": "approve", "queue": "quality"}
        assert merchant.post(decide, data={**body, "form_token": "x"}).status_code == 403
        foreign = merchant.post(decide, data=body, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        hidden = merchant.post(f"/desk/items/{stocked[3]}/decision", data=body)
        assert hidden.status_code == 404  # another merchant's image: not even seen
        assert merchant.post(decide, data=body).status_code == 303
    anonymous = httpx.get(f"{api}/desk/queues/quality")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/desk/login"
    assert "/desk" in httpx.get(f"{api}/openapi.json").json()["info"]["description"]


def test_the_api_docs_render_with_no_server_but_this_one(api, browser) -> None:  # type: ignore[no-untyped-def]
    """/docs in a real browser on a machine without internet: Swagger UI comes from the
    API itself and draws every route (it stayed blank when it came from a CDN)."""
    browser.get(f"{api}/docs")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 3)
    shown = browser.find_element(By.ID, "swagger-ui").text
    assert "/v1/uploads" in shown and "/v1/search" in shown
