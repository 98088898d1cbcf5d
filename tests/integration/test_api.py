"""The HTTP API as a client meets it: a real uvicorn server on loopback, real PostgreSQL,
Redis and Celery worker behind it, bearer tokens made with the real CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from celery.result import AsyncResult
from PIL import Image

from tests.integration._prom import samples as _samples
from tests.integration.conftest import vitrine
from vitrine.embedded.common import free_port

BODY_LIMIT = 300_000


@contextmanager
def serving(env: dict[str, str], log_name: str) -> Iterator[str]:
    """`vitrine serve` on a free loopback port with `env`; its base URL once /readyz
    answers 200 (the model for search by photo loaded). Its log (the access log included)
    is `<data dir>/logs/<log_name>`."""
    port = free_port()
    log = Path(env["VITRINE_DATA_DIR"]) / "logs" / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitrine", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:  # the server's own answer is the event awaited
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=5.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        try:
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def api(pipeline_env, celery_worker_process) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`vitrine serve` on a free loopback port; its base URL once /readyz answers."""
    # Logins are many here (every test's desk session, from one address): the limit itself
    # is tested on a server of its own (test_api_safety.py).
    env = dict(
        pipeline_env,
        VITRINE_API_MAX_BODY_BYTES=str(BODY_LIMIT),
        VITRINE_DESK_LOGIN_RATE="1000/minute",
    )
    with serving(env, "test-api.log") as base:
        yield base


def _token(env: dict[str, str], name: str, *merchant: str) -> str:
    made = vitrine(env, "api-token", "create", "--name", name, *merchant, "--json")
    assert made.returncode == 0, made.stderr
    token: str = json.loads(made.stdout)["token"]
    assert token.startswith("vt_") and len(token) > 40
    return token


@pytest.fixture(scope="module")
def tokens(pipeline_env) -> dict[str, str]:  # type: ignore[no-untyped-def]
    suffix = str(time.monotonic_ns())
    return {
        "platform": _token(pipeline_env, f"platform-{suffix}"),
        "acme": _token(pipeline_env, f"acme-{suffix}", "--merchant", "m-acme"),
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _photo_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _wait_done(base: str, token: str, accepted: dict) -> dict:  # type: ignore[type-arg]
    """Wait for the upload's task (its id came back with the 202), then read the image."""
    from vitrine.worker.celery_app import app

    AsyncResult(accepted["task_id"], app=app).get(timeout=120)
    image = httpx.get(f"{base}{accepted['href']}", headers=_auth(token), timeout=10)
    assert image.status_code == 200, image.text
    body: dict = image.json()  # type: ignore[type-arg]
    return body


def test_health_readiness_and_docs(api: str) -> None:
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "model": "ok", "broker": "ok"}
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/uploads", "/v1/images/{image_id}", "/v1/search"} <= set(spec["paths"])
    docs = httpx.get(f"{api}/docs")
    assert docs.status_code == 200 and "cdn." not in docs.text  # served here, offline too
    assert httpx.get(f"{api}/docs/static/swagger-ui-bundle.js").status_code == 200


def test_every_v1_route_needs_a_known_token(api: str, pipeline_env, tokens) -> None:  # type: ignore[no-untyped-def]
    for headers in ({}, _auth("vt_not-a-real-token"), {"Authorization": "Basic eDp5"}):
        answer = httpx.get(f"{api}/v1/images/1", headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "error" in answer.json() and "Traceback" not in answer.text
    name = f"short-lived-{time.monotonic_ns()}"
    token = _token(pipeline_env, name)
    assert httpx.get(f"{api}/v1/images/999999", headers=_auth(token)).status_code == 404
    revoked = vitrine(pipeline_env, "api-token", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{api}/v1/images/999999", headers=_auth(token)).status_code == 401


def test_upload_a_photo_and_read_its_result(api: str, tokens, catalog) -> None:  # type: ignore[no-untyped-def]
    directory, truth = catalog
    photo = sorted(p for p in directory.iterdir() if p.name in truth)[0]
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=_auth(tokens["platform"]),
        files={"file": (photo.name, _photo_bytes(photo), "image/jpeg")},
        data={"merchant_id": "m-api", "sku": "API-1"},
    )
    assert sent.status_code == 202, sent.text
    accepted = sent.json()
    assert accepted["merchant_id"] == "m-api" and accepted["status"] == "pending"
    image = _wait_done(api, tokens["platform"], accepted)
    assert image["status"] == "done" and image["error"] is None
    assert image["label"] == image["top_k"][0]["label"] and 0 < image["confidence"] <= 1
    assert image["model"] and image["sku"] == "API-1" and image["width"] > 0
    assert image["label_source"] == "model" and image["model_label"] == image["label"]
    assert accepted["outcome"] == "created"

    # The same bytes again under another SKU, and once with no SKU: each is a listing of
    # its own (nothing overwritten), answered from the stored result (sha256).
    listings = {"API-1": accepted["image_id"]}
    for sku in ("API-2", None):
        again = httpx.post(
            f"{api}/v1/uploads",
            headers=_auth(tokens["platform"]),
            files={"file": ("copy.jpg", _photo_bytes(photo), "image/jpeg")},
            data={"merchant_id": "m-api", **({"sku": sku} if sku else {})},
        )
        assert again.status_code == 202 and again.json()["outcome"] == "created", again.text
        assert again.json()["image_id"] not in listings.values()
        listings[str(sku)] = again.json()["image_id"]
        assert _wait_done(api, tokens["platform"], again.json())["label"] == image["label"]
    for sku, image_id in listings.items():
        kept = httpx.get(f"{api}/v1/images/{image_id}", headers=_auth(tokens["platform"])).json()
        assert str(kept["sku"]) == sku and kept["status"] == "done"

    # A client retrying the same request names it with an Idempotency-Key: received once.
    keyed = {**_auth(tokens["platform"]), "Idempotency-Key": "order-77/photo-1"}
    first = httpx.post(
        f"{api}/v1/uploads",
        headers=keyed,
        files={"file": ("p.jpg", _photo_bytes(photo))},
        data={"merchant_id": "m-api", "sku": "API-77"},
    )
    assert first.json()["outcome"] == "created"
    _wait_done(api, tokens["platform"], first.json())
    retried = httpx.post(
        f"{api}/v1/uploads",
        headers=keyed,
        files={"file": ("p.jpg", _photo_bytes(photo))},
        data={"merchant_id": "m-api", "sku": "API-77"},
    )
    assert retried.status_code == 202
    body = retried.json()
    assert body["outcome"] == "already received" and body["image_id"] == first.json()["image_id"]
    assert body["status"] == "done" and body["task_id"] is None  # the truth, nothing queued


def test_upload_by_reference_and_its_refusals(api: str, tokens, catalog) -> None:  # type: ignore[no-untyped-def]
    directory, _ = catalog
    photo = sorted(directory.glob("*.*"))[2]
    headers = _auth(tokens["platform"])
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=headers,
        json={"uri": photo.as_uri(), "merchant_id": "m-api", "sku": "REF-1"},
    )
    assert sent.status_code == 202, sent.text
    assert _wait_done(api, tokens["platform"], sent.json())["status"] == "done"

    refusals = [
        ({"uri": "file:///etc/passwd", "merchant_id": "m-api"}, 422, "file roots"),
        ({"uri": "gopher://x/y", "merchant_id": "m-api"}, 422, "http(s)://"),
        ({"uri": photo.as_uri()}, 422, "merchant_id is required"),
        ({"uri": photo.as_uri(), "merchant_id": "m", "colour": "red"}, 422, "colour"),
        ({"merchant_id": "m-api"}, 422, "uri"),
    ]
    for body, status, reason in refusals:
        answer = httpx.post(f"{api}/v1/uploads", headers=headers, json=body)
        assert answer.status_code == status, (body, answer.text)
        assert reason in answer.json()["error"], (body, answer.text)
    broken = httpx.post(
        f"{api}/v1/uploads",
        headers={**headers, "content-type": "application/json"},
        content=b"{not json",
    )
    assert broken.status_code == 422 and "error" in broken.json()
    wrong_kind = httpx.post(
        f"{api}/v1/uploads", headers={**headers, "content-type": "text/plain"}, content=b"x"
    )
    assert wrong_kind.status_code == 415


def test_request_bodies_over_the_limit_are_refused(api: str, tokens) -> None:  # type: ignore[no-untyped-def]
    headers = _auth(tokens["platform"])
    big = b"\xff" * (BODY_LIMIT + 1)
    declared = httpx.post(
        f"{api}/v1/uploads",
        headers=headers,
        files={"file": ("big.jpg", big, "image/jpeg")},
        data={"merchant_id": "m-api"},
    )
    assert declared.status_code == 413 and "bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(4):
            yield b"x" * (BODY_LIMIT // 2)

    streamed = httpx.post(
        f"{api}/v1/uploads",
        headers={**headers, "content-type": "application/json"},
        content=chunks(),
    )
    assert streamed.status_code == 413, streamed.text


def test_a_merchant_token_sees_and_acts_for_its_merchant_only(api: str, tokens, catalog) -> None:  # type: ignore[no-untyped-def]
    directory, _ = catalog
    photos = sorted(directory.glob("*.*"))
    acme, platform = _auth(tokens["acme"]), _auth(tokens["platform"])
    own = httpx.post(
        f"{api}/v1/uploads", headers=acme, files={"file": ("a.png", photos[3].read_bytes())}
    )
    assert own.status_code == 202 and own.json()["merchant_id"] == "m-acme"
    assert _wait_done(api, tokens["acme"], own.json())["merchant_id"] == "m-acme"
    other = httpx.post(
        f"{api}/v1/uploads",
        headers=platform,
        json={"uri": photos[4].as_uri(), "merchant_id": "m-x"},
    )
    _wait_done(api, tokens["platform"], other.json())
    other_id = other.json()["image_id"]

    assert httpx.get(f"{api}/v1/images/{other_id}", headers=platform).status_code == 200
    hidden = httpx.get(f"{api}/v1/images/{other_id}", headers=acme)
    assert hidden.status_code == 404 and hidden.json() == {"error": f"no image {other_id}"}
    forbidden = httpx.post(
        f"{api}/v1/uploads",
        headers=acme,
        files={"file": ("b.png", photos[3].read_bytes())},
        data={"merchant_id": "m-x"},
    )
    assert forbidden.status_code == 403
    # A merchant's token names no server file, whatever it is, inside the roots or not.
    for uri in (photos[5].as_uri(), str(photos[5]), "file:///etc/passwd"):
        refused = httpx.post(f"{api}/v1/uploads", headers=acme, json={"uri": uri})
        assert refused.status_code == 403 and "itself" in refused.json()["error"], uri
    near = httpx.get(f"{api}/v1/images/{own.json()['image_id']}/similar?k=50", headers=acme)
    assert near.status_code == 200, near.text
    assert {n["merchant_id"] for n in near.json()["neighbours"]} <= {"m-acme"}


def test_similar_items_and_search_by_photo(api: str, tokens, catalog) -> None:  # type: ignore[no-untyped-def]
    directory, truth = catalog
    # Six photos of one kind: neighbours are cut off past VITRINE_SIMILAR_MAX_DISTANCE, so
    # k places fill only with items of the same kind.
    kinds = Counter(truth.values())
    kind = max(sorted(kinds), key=kinds.__getitem__)
    photos = sorted(
        directory / name
        for name, label in truth.items()
        if label == kind and (directory / name).stat().st_size < 250_000  # the body cap here
    )[:6]
    assert len(photos) == 6
    headers = _auth(tokens["platform"])
    accepted = [
        httpx.post(
            f"{api}/v1/uploads",
            headers=headers,
            json={"uri": p.as_uri(), "merchant_id": "m-search"},
        ).json()
        for p in photos
    ]
    for item in accepted:
        assert _wait_done(api, tokens["platform"], item)["status"] == "done"
    first = accepted[0]["image_id"]
    near = httpx.get(f"{api}/v1/images/{first}/similar", headers=headers, params={"k": 3})
    assert near.status_code == 200, near.text
    neighbours = near.json()["neighbours"]
    assert len(neighbours) == 3 and first not in {n["image_id"] for n in neighbours}
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)
    for params, status in (({"k": 0}, 422), ({"k": 101}, 422), ({"label": "Spaceship"}, 422)):
        answer = httpx.get(f"{api}/v1/images/{first}/similar", headers=headers, params=params)
        assert answer.status_code == status and answer.json()["error"], (params, answer.text)

    found = httpx.post(
        f"{api}/v1/search",
        headers=headers,
        files={"file": ("q.jpg", photos[0].read_bytes(), "image/jpeg")},
        data={"merchant_id": "m-search", "k": "4"},
    )
    assert found.status_code == 200, found.text
    result = found.json()
    assert len(result["neighbours"]) == 4 and result["label"] and result["model"]
    assert result["neighbours"][0]["image_id"] == first  # the photo itself is in the catalog
    assert result["neighbours"][0]["distance"] < 1e-3
    assert {n["merchant_id"] for n in result["neighbours"]} == {"m-search"}
    garbage = httpx.post(
        f"{api}/v1/search",
        headers=headers,
        files={"file": ("x.jpg", b"not an image", "image/jpeg")},
    )
    assert garbage.status_code == 422 and "photo" in garbage.json()["error"]


def test_metrics_count_what_was_answered(api: str, tokens, catalog) -> None:  # type: ignore[no-untyped-def]
    headers = _auth(tokens["platform"])
    assert httpx.get(f"{api}/metrics").status_code == 401  # not for anyone
    assert httpx.get(f"{api}/metrics", headers=_auth(tokens["acme"])).status_code == 403
    before = _samples(httpx.get(f"{api}/metrics", headers=headers).text)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    for _ in range(2):
        httpx.post(
            f"{api}/v1/uploads",
            headers=headers,
            files={"file": ("red.png", buf.getvalue(), "image/png")},
            data={"merchant_id": "m-metrics"},
        )
    httpx.get(f"{api}/v1/images/424242", headers=headers)
    after = _samples(httpx.get(f"{api}/metrics", headers=headers).text)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    route = 'method="POST",route="/v1/uploads",status="202"'
    assert delta(f"vitrine_api_requests_total{{{route}}}") == 2
    assert delta('vitrine_api_uploads_total{kind="file"}') == 2
    missing = 'method="GET",route="/v1/images/{image_id}",status="404"'
    assert delta(f"vitrine_api_requests_total{{{missing}}}") == 1
    assert not any('status="500"' in name for name in after), "no request may end in a 500"
