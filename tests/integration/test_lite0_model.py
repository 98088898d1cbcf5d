"""A merchant's own taxonomy on EfficientNet-Lite0 (`train --data --backbone lite0`), used
as people would: trained, registered and made active by the CLI, then uploads through the
real API, worker and database get its labels, "unknown" for what is none of them, search
by photo and a heat map."""

# ruff: noqa: F811  (the `api` fixture is imported from test_api.py and named by the tests)
from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from tests.integration.test_api import _auth, _token, _wait_done, api  # noqa: F401
from vitrine.pipeline.synthetic.foreign import make_foreign_photo

pytestmark = pytest.mark.integration

KINDS = ("mug", "clock", "apple")
STYLES = ("white", "transparent", "studio")


def _photo(kind: str, i: int, rng: np.random.Generator, fmt: str = "PNG") -> bytes:
    """A PNG (transparent cut-outs stay transparent) or, under the test API's body limit,
    a JPEG."""
    img, _ = make_foreign_photo(kind, STYLES[i % 3], rng=rng)
    buf = io.BytesIO()
    (img if fmt == "PNG" else img.convert("RGB")).save(buf, fmt)
    return buf.getvalue()


def _ok(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_lite0_model_serves_a_merchants_own_catalogue(  # type: ignore[no-untyped-def]
    api, pipeline_env, engine: Engine, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    for kind in KINDS:
        (tmp_path / "home" / kind).mkdir(parents=True)
        for i in range(9):
            (tmp_path / "home" / kind / f"{i}.png").write_bytes(_photo(kind, i, rng))
    model_dir = tmp_path / "home-model"
    trained = json.loads(
        _ok(
            vitrine(
                pipeline_env,
                "train",
                "--data",
                str(tmp_path / "home"),
                "--out",
                str(model_dir),
                "--backbone",
                "lite0",
                "--epochs",
                "30",
                "--version",
                "1",
                "--json",
                timeout=600,
            )
        )
    )
    assert trained["model"] == "home@1"
    _ok(vitrine(pipeline_env, "models", "add", str(model_dir)))
    _ok(vitrine(pipeline_env, "models", "activate", "home@1"))
    try:
        token = _token(pipeline_env, f"home-{uuid.uuid4().hex[:6]}")
        merchant = f"m-home-{uuid.uuid4().hex[:6]}"
        sent = {}
        for kind, i in [("mug", 20), ("mug", 21), ("clock", 22), ("laptop", 23)]:
            accepted = httpx.post(
                f"{api}/v1/uploads",
                headers=_auth(token),
                files={"file": (f"{kind}-{i}.jpg", _photo(kind, i, rng, "JPEG"))},
                data={"merchant_id": merchant, "sku": f"{kind}-{i}"},
            )
            assert accepted.status_code == 202, accepted.text
            sent[(kind, i)] = _wait_done(api, token, accepted.json())
        for (kind, _), image in sent.items():
            assert image["model"] == "home@1", image
            want = "unknown" if kind == "laptop" else kind
            assert image["label"] == want, (kind, image)
        with engine.connect() as conn:
            dims = conn.execute(
                text(
                    "SELECT DISTINCT vector_dims(e.embedding) FROM embeddings e "
                    "JOIN models m ON m.id = e.model_id JOIN images i ON i.id = e.image_id "
                    "WHERE m.key = 'home@1' AND i.merchant_id = :m"
                ),
                {"m": merchant},
            ).scalars()
            assert list(dims) == [128]
        mug = sent[("mug", 20)]["id"]
        near = httpx.get(
            f"{api}/v1/images/{mug}/similar", headers=_auth(token), params={"k": 1}
        ).json()
        assert [n["image_id"] for n in near["neighbours"]] == [sent[("mug", 21)]["id"]]
        found = httpx.post(
            f"{api}/v1/search",
            headers=_auth(token),
            files={"file": ("q.jpg", _photo("clock", 30, rng, "JPEG"))},
        ).json()
        assert found["label"] == "clock", found
        png = tmp_path / "mug-explained.png"
        explained = json.loads(
            _ok(vitrine(pipeline_env, "explain", str(mug), "--png", str(png), "--json"))
        )
        assert explained["label"] == "mug" and explained["neighbours"] == []
        assert explained["training_set"].startswith("none: home@1 was trained on 3 classes")
        with Image.open(png) as drawn:  # the heat map on the object view the model read
            assert drawn.width > 300 and drawn.height > 200
    finally:
        _ok(vitrine(pipeline_env, "models", "activate", "fashion-cnn@1"))
