"""The API and the review desk tried as an attacker would: they keep the workers' rules.

A real `vitrine serve` on loopback, the real worker, PostgreSQL and Redis. Each test is a
row of the attack table in docs/security.md: stored photos read only under the source
policy and the image limits, one merchant never reaching another's pixels, the caller
checked before a body is read, no client input answered with a 500, server-side desk
sessions, rate limits, metrics and logs that give nothing away.
"""

# ruff: noqa: F811  (the `api` fixture is imported from test_api.py and named by the tests)
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from tests.integration.test_api import (  # noqa: F401  (fixture)
    BODY_LIMIT,
    _auth,
    _token,
    _wait_done,
    api,
    serving,
)
from vitrine.embedded.common import free_port
from vitrine.ops.uploads import register_uploads
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration


def _png(size: tuple[int, int] = (64, 64), colour: str = "red", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode != "1" else 0).save(buf, "PNG")
    return buf.getvalue()


def _desk(api: str, token: str) -> httpx.Client:
    """A logged-in desk session (the cookie the login set), sending the desk's Origin."""
    client = httpx.Client(base_url=api, headers={"Origin": api}, timeout=15)
    assert client.post("/desk/login", data={"token": token}).status_code == 303
    return client


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A folder outside the workers' file roots (they cover pytest's temp tree and the
    upload directory), with a real photo, a sub-folder and a FIFO in it."""
    folder = Path(tempfile.mkdtemp(prefix="vitrine-outside-"))
    (folder / "secret.png").write_bytes(_png(colour="blue"))
    (folder / "a-folder").mkdir()
    os.mkfifo(folder / "a-fifo")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_desk_thumbnails_keep_the_workers_source_policy_and_image_limits(  # type: ignore[no-untyped-def]
    api, pipeline_env, engine: Engine, outside: Path, tmp_path: Path
) -> None:
    """Rows whose uri a producer wrote (the platform's events are not checked by the API):
    outside the roots the desk reads nothing and answers the same 404 whether the path is
    a photo, a folder, a FIFO (never a hung request), missing, or /etc/shadow; inside the
    roots a decompression bomb and formats the workers refuse are never thumbnailed."""
    bomb, pcx = tmp_path / "bomb.png", tmp_path / "old.pcx"
    bomb.write_bytes(_png((12_000, 12_000), mode="1"))  # 144 Mpx in a few kB
    Image.new("RGB", (64, 64), "red").save(pcx, "PCX")
    good = tmp_path / "good.png"
    good.write_bytes(_png())
    hostile = [
        (outside / "secret.png").as_uri(),
        (outside / "a-folder").as_uri(),
        (outside / "a-fifo").as_uri(),
        (outside / "missing.png").as_uri(),
        "file:///etc/shadow",
        bomb.as_uri(),
        pcx.as_uri(),
    ]
    uploads = [Upload(u, "m-attack") for u in [*hostile, good.as_uri()]]
    ids = [r.image_id for r in register_uploads(engine, uploads)]
    desk = _desk(api, _token(pipeline_env, f"attacker-{ids[0]}"))
    answers = []
    for image_id in ids[:-1]:
        answer = desk.get(f"/desk/photos/{image_id}/m.jpg")  # 15 s timeout: a FIFO would hang
        reason = answer.text.split('id="error-reason">')[1].split("<")[0]  # the desk's page
        answers.append((answer.status_code, reason.replace(str(image_id), "N")))
    assert set(answers) == {(404, "the photo of image N is not available")}
    assert desk.get(f"/desk/photos/{ids[-1]}/m.jpg").status_code == 200  # the control
    assert not list((Path(pipeline_env["VITRINE_DATA_DIR"]) / "desk-thumbs").rglob(f"{ids[0]}-*"))


def test_one_merchant_never_reaches_another_merchants_pixels(  # type: ignore[no-untyped-def]
    api, pipeline_env, engine: Engine
) -> None:
    """Merchant B uploads a photo; merchant A tries every spelling of where it is stored.
    Nothing is queued for A, and no answer names a server directory."""
    suffix = str(os.getpid()) + str(free_port())
    tokens = {
        who: _token(pipeline_env, f"{who}-{suffix}", "--merchant", f"m-{who}-{suffix}")
        for who in ("a", "b")
    }
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=_auth(tokens["b"]),
        files={"file": ("private.png", _png(colour="green"))},
    )
    assert sent.status_code == 202, sent.text
    shown = sent.json()["uri"]
    data_dir = pipeline_env["VITRINE_DATA_DIR"]
    assert shown.startswith("upload:api/") and data_dir not in sent.text
    done = _wait_done(api, tokens["b"], sent.json())
    assert done["uri"] == shown and data_dir not in json.dumps(done)
    with engine.connect() as conn:
        stored_uri = conn.execute(
            text("SELECT uri FROM images WHERE id = :i"), {"i": sent.json()["image_id"]}
        ).scalar_one()
    stored = Path(urlsplit(stored_uri).path)

    # where B's photo is stored, how it is shown, and other spellings of it
    tries = [
        stored_uri,
        str(stored),
        "file://localhost" + str(stored),
        stored_uri.replace("/api/", "/api/./"),
        shown,
        "upload:" + shown.removeprefix("upload:"),
        f"file://{data_dir}/uploads/staged/",
        stored_uri + "%00.png",
    ]
    for uri in tries:
        answer = httpx.post(f"{api}/v1/uploads", headers=_auth(tokens["a"]), json={"uri": uri})
        assert answer.status_code in (403, 422), (uri, answer.text)
        assert data_dir not in answer.text
    with engine.connect() as conn:
        mine = conn.execute(
            text("SELECT count(*) FROM images WHERE merchant_id = :m"), {"m": f"m-a-{suffix}"}
        ).scalar_one()
    assert mine == 0
    assert (
        httpx.get(
            f"{api}/v1/images/{sent.json()['image_id']}", headers=_auth(tokens["a"])
        ).status_code
        == 404
    )

    # B's original is private to vitrine's processes: 0640 in 0750 folders
    assert stat.S_IMODE(stored.stat().st_mode) == 0o640
    uploads = Path(data_dir) / "uploads"
    for folder in (stored.parent, stored.parent.parent, uploads / "api", uploads):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder


def _status_without_body(api: str, path: str, headers: dict[str, str], length: int) -> str:
    """Send a request that announces a body of `length` bytes (under the route's cap) but
    sends 100 bytes of it; the status line the server answers with meanwhile (a server
    waiting for the body would time out)."""
    host = urlsplit(api)
    head = [f"POST {path} HTTP/1.1", f"Host: {host.netloc}", f"Content-Length: {length}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host.hostname, host.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"x" * 100)
        first = sock.recv(200).decode(errors="replace")
    return first.split("\r\n")[0]


def test_the_caller_is_checked_before_a_byte_of_the_body_is_read(api) -> None:  # type: ignore[no-untyped-def]
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    for path in ("/v1/uploads", "/v1/reviews", "/v1/search"):
        answer = _status_without_body(api, path, multipart, BODY_LIMIT - 1000)
        assert answer.endswith("401 Unauthorized"), path
        bad = {**multipart, "Authorization": "Bearer vt_not-a-token"}
        answer = _status_without_body(api, path, bad, BODY_LIMIT - 1000)
        assert answer.endswith("401 Unauthorized"), path
    for path, length in (("/desk/search", BODY_LIMIT - 1000), ("/desk/logout", 30_000)):
        answer = _status_without_body(api, path, multipart, length)
        assert answer.endswith("303 See Other"), path
    # a form route's cap is small: a photo-sized body there is refused before anything
    answer = _status_without_body(api, "/desk/items/1/decision", multipart, BODY_LIMIT - 1000)
    assert answer.endswith("413 Request Entity Too Large")


def test_form_fields_have_the_limits_json_fields_have(api, pipeline_env) -> None:  # type: ignore[no-untyped-def]
    token = _auth(_token(pipeline_env, f"fields-{free_port()}"))
    photo = {"file": ("p.png", _png())}
    for field, value, status in (
        ("sku", "s" * 201, 422),  # JSON's limit, now in a form too
        ("sku", "s" * 20_000, 400),  # longer than any field: refused while parsing
        ("merchant_id", "m" * 201, 422),
        ("colour", "red", 422),  # unknown fields, as in JSON
    ):
        data = {"merchant_id": "m-fields", field: value}
        answer = httpx.post(f"{api}/v1/uploads", headers=token, files=photo, data=data)
        assert answer.status_code == status, (field, answer.text[:200])
        as_json = httpx.post(
            f"{api}/v1/uploads", headers=token, json={"uri": "https://x.test/p.jpg", **data}
        )
        assert as_json.status_code == 422, (field, as_json.text[:200])


def _values() -> list[str]:
    return ["99999999999999999999", "-1", "0", "%00", "a%00b", "x" * 5000, "1e309", "NaN"]


def test_no_client_input_gives_a_500(api, ctx, pipeline_env) -> None:  # type: ignore[no-untyped-def]
    """Every route of the app, with oversized integers, NUL bytes and overlong text in
    its path, its query and its body, as a platform client and as a desk session."""
    from fastapi.routing import APIRoute

    from vitrine.api.app import create_app

    token = _token(pipeline_env, f"fuzz-{free_port()}")
    desk = _desk(api, token)
    form = {"form_token": "x", "action": "relabel", "label": "\x00" * 3, "back": "\x00"}
    bodies: list[dict[str, object]] = [
        {"json": {"uri": "file:///x\x00y", "merchant_id": "m\x00", "sku": "s" * 5000}},
        {"json": {"uri": "http://" + "a" * 5000, "merchant_id": "m", "sku": "s", "k": 10**30}},
        {"content": b"\x00\xff" * 100, "headers": {"content-type": "application/json"}},
        {"files": {"file": ("\x00.png", b"\x00" * 64)}, "data": {"k": "9" * 40, "label": "\x00"}},
        {"data": form},
    ]
    answers: dict[str, int] = {}

    def flat(routes: list[object], prefix: str = "") -> list[tuple[str, set[str]]]:
        """(path, methods) of every route, through included routers of any depth."""
        found: list[tuple[str, set[str]]] = []
        for r in routes:
            if isinstance(r, APIRoute):
                found.append((prefix + r.path, set(r.methods)))
            elif (inner := getattr(r, "original_router", None)) is not None:
                context = getattr(r, "include_context", None)
                found += flat(inner.routes, prefix + getattr(context, "prefix", ""))
        return found

    bearer = httpx.Client(base_url=api, headers=_auth(token), timeout=15)
    routes = flat(list(create_app(ctx).routes))
    assert len(routes) >= 15  # every /v1 and /desk route, health and metrics
    for template, methods in routes:
        params = re.findall(r"{(\w+)}", template)
        for value in _values():
            path = template
            for name in params:
                path = path.replace("{" + name + "}", "s" if name == "size" else value)
            query = {q: value for q in ("k", "label", "before", "after", "below", "merchant")}
            for method in sorted(methods):
                for who, client in (("token", bearer), ("desk", desk)):
                    sends = bodies if method == "POST" else [{}]
                    for body in sends:
                        answer = client.request(method, path, params=query, **body)  # type: ignore[arg-type]
                        key = f"{who} {method} {path[:60]} ?{value[:20]} {str(body)[:40]}"
                        answers[key] = answer.status_code
    failures = {k: v for k, v in answers.items() if v >= 500}
    assert not failures, failures
    assert len(answers) > 500
    # the bearer reached the handlers: not every answer is a 401
    assert any(v not in (401, 303) for k, v in answers.items() if k.startswith("token POST /v1"))


@pytest.fixture(scope="module")
def limited_api(pipeline_env, celery_worker_process) -> Iterator[tuple[str, int, Path]]:  # type: ignore[no-untyped-def]
    """A second server with tight limits and its metrics on a port of their own; (base URL,
    metrics port, its log file)."""
    metrics_port = free_port()
    env = dict(
        pipeline_env,
        VITRINE_API_UPLOAD_RATE="3/minute",
        VITRINE_API_SEARCH_RATE="2/minute",
        VITRINE_DESK_LOGIN_RATE="3/minute",
        VITRINE_API_METRICS_PORT=str(metrics_port),
    )
    with serving(env, "test-api-limited.log") as base:
        yield (
            base,
            metrics_port,
            Path(pipeline_env["VITRINE_DATA_DIR"]) / "logs" / ("test-api-limited.log"),
        )


def test_rate_limits_answer_429_with_retry_after(limited_api, pipeline_env) -> None:  # type: ignore[no-untyped-def]
    base, _, _ = limited_api
    first, second = (_token(pipeline_env, f"rate-{n}-{free_port()}") for n in (1, 2))
    upload = {"uri": "https://images.example/p.jpg", "merchant_id": "m-rate"}
    answers = [
        httpx.post(f"{base}/v1/uploads", headers=_auth(first), json=upload).status_code
        for _ in range(4)
    ]
    assert answers == [202, 202, 202, 429]
    refused = httpx.post(f"{base}/v1/uploads", headers=_auth(first), json=upload)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert "too many uploads" in refused.json()["error"]
    # per token: another client is not held back by the first one's flood
    assert httpx.post(f"{base}/v1/uploads", headers=_auth(second), json=upload).status_code == 202

    photo = {"file": ("q.png", _png())}
    searches = [
        httpx.post(f"{base}/v1/search", headers=_auth(second), files=photo).status_code
        for _ in range(3)
    ]
    assert searches[:2] != [429, 429] and searches[2] == 429

    logins = [
        httpx.post(
            f"{base}/desk/login", data={"token": "vt_guess"}, headers={"Origin": base}
        ).status_code
        for _ in range(4)
    ]
    assert logins == [401, 401, 401, 429]


def test_metrics_on_their_own_port_and_no_query_string_in_the_access_log(limited_api) -> None:  # type: ignore[no-untyped-def]
    base, metrics_port, log = limited_api
    assert httpx.get(f"{base}/metrics").status_code == 404  # not on the API's port at all
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scraped.status_code == 200 and "vitrine_api_requests_total" in scraped.text
    secret = "vt_" + "s3cr3t" * 6
    httpx.get(f"{base}/desk/login", params={"token": secret, "next": "/desk"})
    httpx.get(f"{base}/healthz", params={"token": secret})
    logged = log.read_text()
    assert secret not in logged
    assert "/healthz?token=…" in logged  # the request is still there, its values are not


def test_desk_sessions_live_on_the_server(api, pipeline_env, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    name = f"session-{free_port()}"
    token = _token(pipeline_env, name)
    desk = _desk(api, token)
    cookie = desk.cookies["vitrine_desk"]
    assert token not in cookie and token not in json.dumps(dict(desk.cookies))
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT count(*) FROM desk_sessions")).scalar_one()
    assert kept >= 1
    page = desk.get("/desk")
    assert page.status_code == 200
    form = page.text.split('name="form_token" value="')[1].split('"')[0]
    assert desk.post("/desk/logout", data={"form_token": form}).status_code == 303
    replay = httpx.get(f"{api}/desk", cookies={"vitrine_desk": cookie})  # the old cookie
    assert replay.status_code == 303 and replay.headers["location"] == "/desk/login?expired=1"

    # rotation: the old token stops, its desk session with it; the new one works at once
    again = _desk(api, token)
    rotated = vitrine(pipeline_env, "api-token", "rotate", name, "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_token = json.loads(rotated.stdout)["token"]
    assert new_token != token and json.loads(rotated.stdout)["name"] == name
    assert httpx.get(f"{api}/v1/images/1", headers=_auth(token)).status_code == 401
    assert httpx.get(f"{api}/v1/images/1", headers=_auth(new_token)).status_code in (200, 404)
    assert again.get("/desk").status_code == 303

    # a revoked client's name can be given to a new client
    assert vitrine(pipeline_env, "api-token", "revoke", name).returncode == 0
    reborn = _token(pipeline_env, name)
    assert httpx.get(f"{api}/v1/images/1", headers=_auth(reborn)).status_code in (200, 404)
    assert httpx.get(f"{api}/v1/images/1", headers=_auth(new_token)).status_code == 401


def test_error_texts_name_no_server_directory(api, pipeline_env) -> None:  # type: ignore[no-untyped-def]
    """A platform client's file under the roots that is not there fails in the worker
    with a reason that, shown through the API, names no directory of the server."""
    token = _token(pipeline_env, f"errors-{free_port()}")
    data_dir = pipeline_env["VITRINE_DATA_DIR"]
    missing = Path(data_dir) / "uploads" / "no-such-photo.png"
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=_auth(token),
        json={"uri": missing.as_uri(), "merchant_id": "m-errors"},
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["uri"] == "upload:no-such-photo.png"
    image = _wait_done(api, token, sent.json())
    assert image["status"] == "failed" and "upload:no-such-photo.png" in image["error"]
    assert data_dir not in json.dumps(image)
