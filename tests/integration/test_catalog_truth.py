"""What people read is true, through the real worker, API and database: one row per
upload event, a person's decision wins, "none of our categories" is an answer."""

# ruff: noqa: F811  (the `api` fixture is imported from test_api.py and named by the tests)
from __future__ import annotations

import io
import json
import uuid

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from tests.integration.test_api import _auth, _token, _wait_done, api  # noqa: F401
from vitrine.db import repository
from vitrine.pipeline.synthetic.foreign import make_foreign_photo

pytestmark = pytest.mark.integration


def _jpeg(img: object) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_a_redelivered_event_is_one_row_another_event_another(  # type: ignore[no-untyped-def]
    celery_worker_process, engine: Engine, catalog
) -> None:
    """The same task id published twice (a producer retrying, a broker handing it back) is
    one listing; the same photo in another message is another."""
    from celery.result import AsyncResult

    from vitrine.worker.celery_app import app
    from vitrine.worker.names import INGEST_TASK, UPLOADS_QUEUE

    directory, _ = catalog
    photo = sorted(directory.glob("*.*"))[20]
    merchant = f"m-events-{uuid.uuid4().hex[:6]}"
    kwargs = {"uri": photo.as_uri(), "merchant_id": merchant, "sku": "E-1"}
    task_id = str(uuid.uuid4())
    for _ in range(2):
        app.send_task(INGEST_TASK, kwargs=kwargs, task_id=task_id, queue=UPLOADS_QUEUE)
    other = app.send_task(INGEST_TASK, kwargs=kwargs, queue=UPLOADS_QUEUE)
    AsyncResult(task_id, app=app).get(timeout=120)
    other.get(timeout=120)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id, status FROM images WHERE merchant_id = :m ORDER BY id"),
            {"m": merchant},
        ).all()
    assert sorted(r.event_id for r in rows) == sorted([task_id, str(other.id)])
    assert {r.status for r in rows} == {"done"}


def test_a_persons_decision_wins_everywhere_a_label_is_read(  # type: ignore[no-untyped-def]
    api, pipeline_env, engine: Engine, catalog
) -> None:
    directory, truth = catalog
    token = _token(pipeline_env, f"decider-{uuid.uuid4().hex[:6]}")
    merchant = f"m-decide-{uuid.uuid4().hex[:6]}"
    photos = sorted(p for p in directory.iterdir() if p.name in truth)[40:44]
    ids = []
    for photo in photos:
        sent = httpx.post(
            f"{api}/v1/uploads",
            headers=_auth(token),
            json={"uri": photo.as_uri(), "merchant_id": merchant, "declared_label": "Coat"},
        )
        assert _wait_done(api, token, sent.json())["status"] == "done"
        ids.append(sent.json()["image_id"])
    target = ids[0]
    before = httpx.get(f"{api}/v1/images/{target}", headers=_auth(token)).json()
    person = next(lab for lab in ("Bag", "Sneaker") if lab != before["model_label"])
    with engine.begin() as conn:  # what the desk's Relabel button stores
        repository.record_correction(
            conn, image_id=target, action="relabel", label=person, queue=None, decided_by="ann"
        )
    after = httpx.get(f"{api}/v1/images/{target}", headers=_auth(token)).json()
    assert (after["label"], after["label_source"]) == (person, "person")
    assert after["model_label"] == before["model_label"]  # the model's own is still shown
    assert after["declared_label"] == "Coat" and after["declared_label_known"] is True
    with engine.connect() as conn:
        viewed = conn.execute(
            text("SELECT label, label_source FROM image_labels WHERE image_id = :i"),
            {"i": target},
        ).one()
        mismatched = conn.execute(
            text("SELECT count(*) FROM label_mismatches WHERE image_id = :i"), {"i": target}
        ).scalar_one()
    assert tuple(viewed) == (person, "person") and mismatched == 0  # decided: settled
    # the label filter of the similarity search is the label people read
    near = httpx.get(
        f"{api}/v1/images/{ids[1]}/similar",
        headers=_auth(token),
        params={"label": person, "k": 50},
    ).json()
    assert target in {n["image_id"] for n in near["neighbours"]} or near["note"]
    status = json.loads(vitrine(pipeline_env, "status", "--json").stdout)
    assert status["labels"].get(person, 0) >= 1


def test_none_of_our_categories_is_an_answer(api, pipeline_env) -> None:  # type: ignore[no-untyped-def]
    """A circuit board is not a Bag: the API, search by photo and explain say unknown."""
    token = _token(pipeline_env, f"unknown-{uuid.uuid4().hex[:6]}")
    board, _ = make_foreign_photo("circuit board", "white", rng=np.random.default_rng(7))
    data = _jpeg(board)
    sent = httpx.post(
        f"{api}/v1/uploads",
        headers=_auth(token),
        files={"file": ("board.jpg", data)},
        data={"merchant_id": "m-unknown", "sku": "PCB-1"},
    )
    image = _wait_done(api, token, sent.json())
    assert image["label"] == "unknown" and image["label_source"] == "model", image
    assert image["model_label"] and image["unknown_score"] > 0.3
    found = httpx.post(f"{api}/v1/search", headers=_auth(token), files={"file": ("q.jpg", data)})
    body = found.json()
    assert body["label"] == "unknown" and body["neighbours"] == []
    assert "none of the model's categories" in body["note"]
    explained = vitrine(pipeline_env, "explain", str(image["id"]), "--json", timeout=300)
    assert explained.returncode == 0, explained.stderr[-2000:]
    assert json.loads(explained.stdout)["label"] == "unknown"
