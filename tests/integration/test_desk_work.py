"""The review desk as a person works in it, in Debian's chromium: counts on every queue,
a near-duplicate pair decided with the keyboard and undone, a page approved in bulk and
undone, an item with its heat map relabelled by keys, errors as pages, a phone's width,
and an accessibility check (axe-core, injected into each page). Every decision is checked
in SQL.

Screenshots go to $VITRINE_DESK_SCREENSHOTS when set, as in test_desk.py.
"""

# ruff: noqa: F811  (fixtures imported from test_api.py / test_desk.py are named by the tests)
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.by import By  # noqa: E402  (after test_desk's skip line)
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from sqlalchemy import Engine, text

from tests.integration.test_api import _auth, _token, _wait_done, api  # noqa: F401
from tests.integration.test_desk import (  # noqa: F401  (the browser fixture)
    _go,
    _left,
    _shot,
    _wait,
    browser,
)

pytestmark = pytest.mark.integration
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe-core" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
PHONE_WIDTH = 375


@pytest.fixture(scope="module")
def work(api, pipeline_env, catalog) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A merchant of its own with five small photos (each under the 1000 px rule, so all
    wait in the quality queue) and the first one uploaded again under another SKU (a
    near-duplicate pair of the same bytes); its person's token and the ids."""
    suffix = str(time.monotonic_ns())
    merchant, person = f"m-work-{suffix}", f"work-{suffix}"
    token = _token(pipeline_env, person, "--merchant", merchant)
    directory, _ = catalog
    photos = []
    for path in sorted(directory.glob("*.*"))[40:45]:
        with Image.open(path) as img:
            img.thumbnail((360, 360))
            out = io.BytesIO()
            img.convert("RGB").save(out, "PNG")
            photos.append(out.getvalue())
    ids = []
    for n, data in enumerate([*photos, photos[0]]):
        sent = httpx.post(
            f"{api}/v1/uploads",
            headers=_auth(token),
            files={"file": (f"p{n}.png", data, "image/png")},
            data={"merchant_id": merchant, "sku": f"W-{n}", "declared_label": "Bag"},
        )
        assert sent.status_code == 202, sent.text
        assert _wait_done(api, token, sent.json())["status"] == "done"
        ids.append(sent.json()["image_id"])
    return {"merchant": merchant, "person": person, "token": token, "ids": ids}


def _press(driver: WebDriver, key: str, navigates: bool = True) -> None:
    """Type `key` on the page (not in a field); wait for the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.TAG_NAME, "body").send_keys(key)
    if navigates:
        _left(driver, page)


def _count(driver: WebDriver, queue: str) -> int:
    return int(driver.find_element(By.ID, f"count-{queue}").text.replace(",", ""))


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def test_a_pair_decided_with_the_keyboard_and_undone(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    first, *_, again = work["ids"]
    _log_in_once(browser, api, work["token"])
    assert _count(browser, "duplicates") == 1  # the merchant's one pair, counted everywhere
    assert _count(browser, "quality") == len(work["ids"])
    assert _count(browser, "failed") == 0  # none of this merchant's uploads failed
    browser.get(f"{api}/desk/queues/duplicates")
    pair = browser.find_element(By.ID, f"pair-{first}-{again}")
    assert "current" in str(pair.get_attribute("class"))  # the first pair has the keys
    sides = pair.find_elements(By.CSS_SELECTOR, ".side img")
    assert [s.get_attribute("src").split("/desk/")[1] for s in sides] == [  # type: ignore[union-attr]
        f"photos/{first}/s.jpg",
        f"photos/{again}/s.jpg",
    ]
    assert "the same file" in pair.text and "SKU W-0" in pair.text and "SKU W-5" in pair.text
    _shot(browser, "pairs")

    _press(browser, "?", navigates=False)  # the list of keys
    keys = browser.find_element(By.ID, "keys")
    assert keys.is_displayed() and "not a duplicate" in keys.text
    browser.find_element(By.ID, "keys-close").click()
    _wait(browser, lambda d: not d.find_element(By.ID, "keys").is_displayed())

    _press(browser, "n")  # not a duplicate
    decided = _rows(
        engine,
        "SELECT kind, image_id, other_image_id, decision, decided_by FROM pair_decisions "
        "WHERE image_id = :a",
        a=first,
    )
    assert [tuple(r) for r in decided] == [
        ("duplicate", first, again, "not_duplicate", work["person"])
    ]
    assert browser.find_element(By.ID, "empty").is_displayed()  # it never comes back
    assert _count(browser, "duplicates") == 0
    assert "not a duplicate" in browser.find_element(By.ID, "last-action").text

    _press(browser, "u")  # undo
    assert not _rows(engine, "SELECT 1 FROM pair_decisions WHERE image_id = :a", a=first)
    assert browser.find_element(By.ID, f"pair-{first}-{again}").is_displayed()

    _press(browser, "d")  # delist the newer one
    (delisted,) = _rows(
        engine,
        "SELECT decision, delisted_image_id FROM pair_decisions WHERE image_id = :a",
        a=first,
    )
    assert tuple(delisted) == ("delist_one", again)
    browser.get(f"{api}/desk")
    assert not browser.find_elements(By.ID, f"tile-{again}")  # gone from the catalog
    browser.get(f"{api}/desk/items/{again}")
    assert f"duplicate of #{first}" in browser.find_element(By.ID, "delisted").text
    (listed,) = _rows(
        engine, "SELECT kept_image_id FROM delisted_images WHERE image_id = :b", b=again
    )
    assert listed.kept_image_id == first


def test_a_review_photo_judged_against_its_listing(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    """A shopper's photo that looks nothing like the listing waits beside it; "w" (does not
    match) stores the verdict and the pair leaves the queue."""
    from celery.result import AsyncResult

    from vitrine.worker.celery_app import app

    stripes = Image.new("RGB", (480, 480), "white")
    for x in range(0, 480, 40):
        stripes.paste((230, 40 + x // 3, 200 - x // 4), (x, 0, x + 20, 480))
    out = io.BytesIO()
    stripes.save(out, "JPEG")
    ref = f"review-{time.monotonic_ns()}"
    sent = httpx.post(
        f"{api}/v1/reviews",
        headers=_auth(work["token"]),
        files={"file": ("shopper.jpg", out.getvalue(), "image/jpeg")},
        data={"merchant_id": work["merchant"], "sku": "W-2", "review_ref": ref},
    )
    assert sent.status_code == 202, sent.text
    AsyncResult(sent.json()["task_id"], app=app).get(timeout=120)
    (review,) = _rows(engine, "SELECT id FROM reviews WHERE review_ref = :r", r=ref)
    assert _rows(engine, "SELECT 1 FROM review_mismatches WHERE review_id = :r", r=review.id)

    _log_in_once(browser, api, work["token"])
    browser.get(f"{api}/desk/queues/review_mismatches")
    row = browser.find_element(By.ID, f"review-{review.id}")
    shopper, listing = row.find_elements(By.CSS_SELECTOR, ".side img")
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete", shopper))
    assert browser.execute_script("return arguments[0].naturalWidth", shopper) > 0
    assert f"/desk/photos/{work['ids'][2]}/s.jpg" in str(listing.get_attribute("src"))
    assert "match score" in row.text and ref in row.text
    _press(browser, "w")  # does not match
    (verdict,) = _rows(
        engine,
        "SELECT kind, image_id, decision, decided_by FROM pair_decisions WHERE review_id = :r",
        r=review.id,
    )
    assert tuple(verdict) == ("review", work["ids"][2], "does_not_match", work["person"])
    assert not browser.find_elements(By.ID, f"review-{review.id}")


def test_a_page_approved_in_bulk_then_undone(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    _log_in_once(browser, api, work["token"])
    browser.get(f"{api}/desk/queues/quality")
    shown = [
        int(str(r.get_attribute("id")).removeprefix("row-"))
        for r in browser.find_elements(By.CSS_SELECTOR, "#queue .row")
    ]
    assert shown and set(shown) <= set(work["ids"])
    browser.find_element(By.ID, "select-all").click()
    assert browser.find_element(By.ID, "ticked").text == f"{len(shown)} ticked"
    _shot(browser, "bulk")
    _go(browser, browser.find_element(By.ID, "bulk-approve"))
    decided = _rows(
        engine,
        "SELECT image_id, action, queue, action_id FROM label_corrections "
        "WHERE decided_by = :who AND queue = 'quality' ORDER BY image_id",
        who=work["person"],
    )
    assert [r.image_id for r in decided] == sorted(shown)
    assert {(r.action, r.queue) for r in decided} == {("approve", "quality")}
    assert len({r.action_id for r in decided}) == 1  # one action, undone as one
    assert browser.find_element(By.ID, "empty").is_displayed()
    assert f"{len(shown)} items" in browser.find_element(By.ID, "last-action").text

    _go(browser, browser.find_element(By.ID, "undo"))
    assert not _rows(
        engine,
        "SELECT 1 FROM label_corrections WHERE action_id = :a",
        a=decided[0].action_id,
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#queue .row")) == len(shown)


def test_an_item_with_its_heat_map_relabelled_by_keys(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    target = work["ids"][1]
    _log_in_once(browser, api, work["token"])
    browser.get(f"{api}/desk/items/{target}")
    heat = browser.find_element(By.ID, "heat")
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete", heat))
    assert browser.execute_script("return arguments[0].naturalWidth", heat) > 200
    assert len(browser.find_elements(By.CSS_SELECTOR, "#topk meter")) == 3  # the top three
    assert browser.find_element(By.ID, "declared").text.startswith("Bag")
    assert browser.find_element(By.ID, "sku").text == "W-1"
    _shot(browser, "item")
    model_label = _rows(
        engine,
        "SELECT p.label FROM predictions p JOIN models m ON m.id = p.model_id AND m.is_active "
        "WHERE p.image_id = :i",
        i=target,
    )[0].label

    _press(browser, "r", navigates=False)  # r: the label list, a label, Enter
    picker = browser.switch_to.active_element
    assert picker.get_attribute("data-key") == "r"
    last = browser.execute_script(
        "return arguments[0].selectedIndex === arguments[0].length - 1", picker
    )
    picker.send_keys(Keys.UP if last else Keys.DOWN)  # another label than the model's
    page = browser.find_element(By.TAG_NAME, "html")
    picker.send_keys(Keys.ENTER)
    _left(browser, page)
    (stored,) = _rows(
        engine,
        "SELECT action, label, previous_label FROM label_corrections WHERE image_id = :i",
        i=target,
    )
    assert stored.action == "relabel" and stored.label != model_label
    assert stored.label in browser.find_element(By.ID, "label-now").text
    assert f"relabelled {stored.label}" in browser.find_element(By.ID, "history").text


def test_find_an_image_by_id_or_a_listing_by_sku(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    _log_in_once(browser, api, work["token"])
    browser.get(f"{api}/desk")
    _press(browser, "/", navigates=False)  # the find box
    typed = browser.switch_to.active_element
    assert typed.get_attribute("id") == "find"
    page = browser.find_element(By.TAG_NAME, "html")
    typed.send_keys(f"#{work['ids'][3]}", Keys.ENTER)
    _left(browser, page)
    assert browser.current_url.endswith(f"/desk/items/{work['ids'][3]}")
    assert browser.find_element(By.ID, "sku").text == "W-3"

    browser.find_element(By.ID, "find").send_keys("W-", Keys.ENTER)
    _wait(browser, lambda d: "sku=W-" in d.current_url)
    listed = {
        int(str(t.get_attribute("id")).removeprefix("tile-"))
        for t in browser.find_elements(By.CSS_SELECTOR, "#grid .tile")
    }
    expected = _rows(
        engine,
        "SELECT id FROM images i WHERE merchant_id = :m AND sku LIKE 'W-%' AND status = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM delisted_images d WHERE d.image_id = i.id)",
        m=work["merchant"],
    )
    assert listed == {r.id for r in expected} and listed
    assert browser.find_element(By.ID, "total").text.startswith(f"{len(listed)} ")
    browser.find_element(By.ID, "find").send_keys("NO-SUCH-SKU", Keys.ENTER)
    _wait(browser, lambda d: "NO-SUCH-SKU" in d.current_url)
    assert "NO-SUCH-SKU" in browser.find_element(By.ID, "empty").text


def test_errors_are_pages_not_json(api, browser, work, engine) -> None:  # type: ignore[no-untyped-def]
    _log_in_once(browser, api, work["token"])
    browser.get(f"{api}/desk")
    _go(browser, browser.find_element(By.CSS_SELECTOR, "#drop button"))  # no photo chosen
    assert "Choose a photo first" in browser.find_element(By.ID, "search-problem").text
    assert "{" not in browser.find_element(By.TAG_NAME, "main").text

    browser.get(f"{api}/desk/items/{work['ids'][-1] + 10_000_000}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    cookie = browser.get_cookie("vitrine_desk")
    assert cookie is not None
    missing = httpx.get(f"{api}/desk/items/999999999", cookies={"vitrine_desk": cookie["value"]})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    bad = httpx.get(f"{api}/desk/queues/quality?below=7", cookies={"vitrine_desk": cookie["value"]})
    assert bad.status_code == 422 and "below" in bad.text and "<h1>" in bad.text
    thumb = httpx.get(
        f"{api}/desk/photos/999999999/s.jpg", cookies={"vitrine_desk": cookie["value"]}
    )
    assert thumb.status_code == 404

    # an expired session (here: ended on the server) sends the person to log in, and says why
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM desk_sessions WHERE client_id = "
                "(SELECT id FROM api_clients WHERE name = :n AND revoked_at IS NULL)"
            ),
            {"n": work["person"]},
        )
    browser.get(f"{api}/desk/queues/quality")
    assert browser.current_url.endswith("/desk/login?expired=1")
    assert "session has ended" in browser.find_element(By.ID, "login-notice").text


def test_a_phone_and_an_accessibility_check(api, browser, work) -> None:  # type: ignore[no-untyped-def]
    """At 375 px nothing scrolls sideways and every button is on the screen; axe-core finds
    no serious or critical violation on any page (what it found is printed, `-s`)."""
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    _log_in_once(browser, api, work["token"])
    pages = {
        "catalog": "/desk",
        "quality": "/desk/queues/quality",
        "duplicates": "/desk/queues/duplicates",
        "item": f"/desk/items/{work['ids'][0]}",
        "failed": "/desk/failed",
        "not-found": "/desk/items/999999999",
    }
    found: dict[str, list[dict[str, Any]]] = {}
    for name, path in pages.items():
        browser.get(api + path)
        found[name] = _axe(browser)
    browser.get(f"{api}/desk/login")
    found["login"] = _axe(browser)
    print("axe-core:", json.dumps({k: [v["id"] for v in vs] for k, vs in found.items()}))
    report = os.environ.get("VITRINE_DESK_SCREENSHOTS")
    if report:
        (Path(report) / "desk-axe.json").write_text(json.dumps(found, indent=1) + "\n")
    serious = {
        name: [f"{v['id']} ({v['impact']}): {v['nodes']}" for v in violations if _grave(v)]
        for name, violations in found.items()
        if any(_grave(v) for v in violations)
    }
    assert not serious, serious

    _log_in_once(browser, api, work["token"])
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": 812, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        for name, path in pages.items():
            browser.get(api + path)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= PHONE_WIDTH, (name, width)
            off = browser.execute_script(
                "return Array.from(document.querySelectorAll('main button, main select'))"
                ".filter(e => e.offsetParent !== null)"
                ".map(e => e.getBoundingClientRect())"
                f".filter(r => r.left < 0 || r.right > {PHONE_WIDTH}).length"
            )
            assert off == 0, name
            if name == "quality":
                _shot(browser, "phone")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _grave(violation: dict[str, Any]) -> bool:
    return violation["impact"] in ("serious", "critical")


def _axe(driver: WebDriver) -> list[dict[str, Any]]:
    """axe-core's violations of WCAG 2 A/AA rules on the page shown (id, impact, nodes)."""
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag',"
        " values: ['wcag2a', 'wcag2aa', 'best-practice']}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));"
    )
    return list(result)


def _log_in_once(driver: WebDriver, base: str, token: str) -> None:
    """Log in unless this browser's session is still good (tests may run alone)."""
    driver.get(f"{base}/desk")
    if "/desk/login" in driver.current_url:
        driver.find_element(By.ID, "token").send_keys(token)
        _go(driver, driver.find_element(By.ID, "login"))
