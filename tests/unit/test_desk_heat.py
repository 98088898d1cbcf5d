"""The desk's heat map without a database: `GET /desk/items/{id}/heat.png` through httpx's
ASGI transport with the shipped model, its cache on disk, its cleanup on `forget`, and the
model shared with search by photo (no second copy, no race)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from vitrine.api import desk_explain, desk_session, errors
from vitrine.api.desk_session import Session, form_token
from vitrine.db import repository
from vitrine.db.types import ApiClient, ModelRow
from vitrine.ops import explain as ops_explain
from vitrine.ops import heat_maps
from vitrine.ops.context import Context
from vitrine.ops.explain import HeatPicture, look_at
from vitrine.ops.explain_picture import PAD, TILE_EDGE, heat_tile
from vitrine.ops.heat_maps import drop_heat_maps, heat_map, heat_map_path
from vitrine.ops.photo_search import PhotoEmbedder
from vitrine.pipeline.inference import model as inference_model
from vitrine.pipeline.inference.explain import grad_cam
from vitrine.pipeline.synthetic.photos import make_product_photo
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR, Settings

REPO = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def _row(key: str = "fashion-cnn@test") -> ModelRow:
    path = str(REPO / "models" / "fashion-cnn")
    return ModelRow(1, key, "fashion-cnn", "1", 128, (), path, True, datetime.now(UTC), 0)


class _Embedder(PhotoEmbedder):
    """The API's embedder with the shipped model as the active one (no database)."""

    active = _row()

    def model_row(self) -> ModelRow:
        return self.active


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four product photos, 900-1400 px JPEGs, as a merchant would send them."""
    folder = tmp_path_factory.mktemp("heat-photos")
    items = load_fashion_mnist(SAMPLE_FASHION_DIR).x_test
    made = []
    for i in range(4):
        rng = np.random.default_rng(i)
        photo, _ = make_product_photo(items[i], rng=rng, size_range=(900, 1400))
        made.append(folder / f"p{i}.jpg")
        photo.convert("RGB").save(made[-1], quality=90)
    return made


@pytest.fixture(scope="module")
def shared(photos: list[Path]) -> tuple[Context, _Embedder]:
    """A context whose file roots hold `photos`, and one embedder with the model loaded
    (seconds: once for the module)."""
    root = photos[0].parent
    ctx = Context(Settings(data_dir=root / "data", file_roots=[root]))
    embedder = _Embedder(ctx)
    embedder.model(embedder.active)
    return ctx, embedder


def _client(merchant: str | None = None) -> ApiClient:
    return ApiClient(1, "ann", merchant, datetime.now(UTC), None)


@pytest.fixture
def app(
    shared: tuple[Context, _Embedder],
    photos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[FastAPI]:
    """The router on an app like the API's; rows: image i+1 -> photos[i] for merchant
    "m-1", image 9 -> a photo outside the file roots, image 10 -> not a photo, image 11
    -> a photo of merchant "m-2". A session as merchant `app.state.merchant` (None: the
    platform's)."""
    ctx, embedder = shared
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photos[0].read_bytes())
    junk = photos[0].parent / "junk.jpg"
    junk.write_bytes(b"not a photo at all")
    rows: dict[int, tuple[str, str, str | None]] = {
        **{i + 1: ("m-1", p.as_uri(), SHA) for i, p in enumerate(photos)},
        9: ("m-1", outside.as_uri(), SHA),
        10: ("m-1", junk.as_uri(), SHA),
        11: ("m-2", photos[1].as_uri(), "cd" * 32),
    }
    app = FastAPI()
    errors.install(app)
    app.include_router(desk_explain.router)
    app.state.ctx, app.state.embedder, app.state.merchant = ctx, embedder, None

    @contextmanager
    def scoped(_ctx: Context, caller: ApiClient) -> Iterator[ApiClient]:
        yield caller  # the "connection" is who asks: row-level security, played here

    def photo_source(conn: ApiClient, *, image_id: int) -> tuple[str, str | None] | None:
        found = rows.get(image_id)
        if found is None or conn.merchant_id not in (None, found[0]):
            return None
        return found[1], found[2]

    def session() -> Session:
        return Session(_client(app.state.merchant), form_token("s"), b"\0" * 32)

    monkeypatch.setattr(desk_explain, "scoped", scoped)
    monkeypatch.setattr(repository, "photo_source", photo_source)
    app.dependency_overrides[desk_session.session] = session
    drop_heat_maps(ctx, list(rows))
    yield app
    drop_heat_maps(ctx, list(rows))


def _get(app: FastAPI, *paths: str, headers: dict[str, str] | None = None) -> list[Any]:
    """(response, seconds) for each path, in order, on one client."""

    async def run() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://desk") as client:
            answers = []
            for path in paths:
                started = time.perf_counter()
                answer = await client.get(path, headers=headers)
                answers.append((answer, time.perf_counter() - started))
            return answers

    return asyncio.run(run())


def test_the_heat_map_is_a_small_png_made_once_then_sent_from_disk(app: FastAPI) -> None:
    (first, made_in), (again, sent_in) = _get(
        app, "/desk/items/1/heat.png", "/desk/items/1/heat.png"
    )
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    assert first.headers["cache-control"] == f"private, max-age={desk_explain.MAX_AGE}"
    with Image.open(io.BytesIO(first.content)) as picture:
        assert picture.format == "PNG" and 360 <= picture.width <= 480
        assert picture.height <= TILE_EDGE + 60
    assert len(first.content) < 200_000
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    path = heat_map_path(app.state.ctx, image_id=1, sha256=SHA, model_key=_Embedder.active.key)
    assert first.headers["etag"] == f'"{path.stem}"' and path.read_bytes() == first.content
    print(f"\nheat map: first {made_in * 1000:.0f} ms, cached {sent_in * 1000:.1f} ms")
    assert sent_in < made_in


def test_an_unchanged_heat_map_is_revalidated_with_a_304(app: FastAPI) -> None:
    ((first, _),) = _get(app, "/desk/items/2/heat.png")
    etag = first.headers["etag"]
    ((same, _),) = _get(app, "/desk/items/2/heat.png", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    ((other, _),) = _get(app, "/desk/items/2/heat.png", headers={"If-None-Match": '"old"'})
    assert other.status_code == 200 and other.content == first.content


def test_a_photo_that_cannot_be_read_is_one_fixed_404(app: FastAPI) -> None:
    """Outside the file roots or not an image: the same words, never the reason."""
    answers = _get(app, "/desk/items/9/heat.png", "/desk/items/10/heat.png")
    for image_id, (answer, _) in zip((9, 10), answers, strict=True):
        assert answer.status_code == 404  # JSON or the desk's error page: the same words
        assert f"the photo of image {image_id} is not available" in answer.text
        assert "secret" not in answer.text and "junk" not in answer.text
    assert not list((app.state.ctx.settings.data_dir / heat_maps.FOLDER).rglob("9-*"))
    ((missing, _),) = _get(app, "/desk/items/77/heat.png")
    assert missing.status_code == 404 and "no image 77" in missing.text
    ((bad, _),) = _get(app, "/desk/items/0/heat.png")
    assert bad.status_code == 422


def test_a_merchant_sees_only_its_own_images_heat_maps(app: FastAPI) -> None:
    app.state.merchant = "m-1"
    ((foreign, _), (own, _)) = _get(app, "/desk/items/11/heat.png", "/desk/items/3/heat.png")
    assert foreign.status_code == 404 and "no image 11" in foreign.text
    assert own.status_code == 200
    assert not list((app.state.ctx.settings.data_dir / heat_maps.FOLDER).rglob("11-*"))


def test_the_route_uses_the_apis_loaded_model(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No second copy of the model for explain: the search embedder's is used."""
    loads = []

    def no_second_load(directory: Path) -> Any:
        loads.append(directory)
        raise AssertionError("a second copy of the model was loaded")

    monkeypatch.setattr(inference_model, "load_model_dir", no_second_load)
    monkeypatch.setattr(ops_explain, "PhotoEmbedder", None)  # nothing may make its own
    ((answer, _),) = _get(app, "/desk/items/4/heat.png")
    assert answer.status_code == 200 and loads == []


def test_new_bytes_or_another_model_make_a_new_picture_and_drop_the_old(
    shared: tuple[Context, _Embedder], photos: list[Path]
) -> None:
    ctx, embedder = shared
    uri = photos[0].as_uri()
    made = heat_map(ctx, embedder, image_id=300, uri=uri, sha256=SHA, active=_row())
    stamp = made.stat().st_mtime_ns
    assert heat_map(ctx, embedder, image_id=300, uri=uri, sha256=SHA, active=_row()) == made
    assert made.stat().st_mtime_ns == stamp  # sent, not made again
    rebytes = heat_map(ctx, embedder, image_id=300, uri=uri, sha256="ef" * 32, active=_row())
    other = heat_map(ctx, embedder, image_id=300, uri=uri, sha256="ef" * 32, active=_row("v2"))
    assert len({made, rebytes, other}) == 3
    assert not made.exists() and not rebytes.exists() and other.exists()
    drop_heat_maps(ctx, [300])


def test_one_picture_is_made_once_however_many_ask_at_once(
    shared: tuple[Context, _Embedder], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, embedder = shared
    calls = []

    def slow(*_: Any, **__: Any) -> HeatPicture:
        calls.append(1)
        time.sleep(0.2)
        return HeatPicture(b"png", "k", "Coat", 0.9, 0.2)

    monkeypatch.setattr(heat_maps, "heat_picture", slow)
    found: list[Path] = []

    def ask() -> None:
        found.append(heat_map(ctx, embedder, image_id=301, uri="", sha256=SHA, active=_row()))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(found)) == 1 and found[0].read_bytes() == b"png"
    drop_heat_maps(ctx, [301])


def test_forget_drops_an_images_heat_maps_and_no_others(tmp_path: Path) -> None:
    ctx = Context(Settings(data_dir=tmp_path))
    for image_id, model in ((12, "a"), (12, "b"), (123, "a"), (268, "a")):
        path = heat_map_path(ctx, image_id=image_id, sha256=SHA, model_key=model)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    assert drop_heat_maps(ctx, [12, 999]) == 2
    left = sorted(p.name.split("-")[0] for p in (tmp_path / heat_maps.FOLDER).rglob("*.png"))
    assert left == ["123", "268"]  # 12's folder also holds 268's (268 % 256 == 12)
    source = (REPO / "ops" / "forget.py").read_text()
    assert "drop_heat_maps(ctx, [i for i, _ in deleted])" in source


def test_the_tile_shows_the_photo_beside_its_heat(photos: list[Path]) -> None:
    """Left the photo as it is, right the same photo coloured where the map is hot; a
    label too long for the caption is cut, not drawn over the key."""
    with Image.open(photos[0]) as opened:
        photo = opened.convert("RGB")
    heat = np.zeros((photo.height, photo.width), np.float32)
    heat[: photo.height // 2] = 1.0  # the top half hot
    caption = "where it looked for " + "Very long category name " * 6
    with Image.open(io.BytesIO(heat_tile(photo, heat, caption=caption))) as tile:
        assert tile.width <= 2 * TILE_EDGE + 40 and tile.height <= TILE_EDGE + 60
        rgb = np.asarray(tile.convert("RGB"), np.int16)
    factor = TILE_EDGE / max(photo.size)
    w, h = round(photo.width * factor), round(photo.height * factor)
    left, gap = (tile.width - (2 * w + PAD)) // 2, w + PAD
    top, bottom = slice(PAD + 2, PAD + h // 2 - 4), slice(PAD + h // 2 + 4, PAD + h - 2)
    plain, heated = rgb[:, left : left + w], rgb[:, left + gap : left + gap + w]
    assert np.abs(heated[top] - plain[top]).mean() > 20  # the hot half is coloured
    assert np.abs(heated[bottom] - plain[bottom]).mean() < 3  # the cold half is not


def test_grad_cam_and_searches_share_the_model_without_a_race(
    shared: tuple[Context, _Embedder], photos: list[Path]
) -> None:
    """Heat maps and searches at once on the one loaded model give exactly what each
    gives alone (why `vitrine.ops.heat_maps` locks only against itself)."""
    ctx, embedder = shared
    model = embedder.model(embedder.active)
    looks = [look_at(ctx, p.read_bytes(), p.name, embedder) for p in photos]
    inputs = np.stack([look.model_input for look in looks])
    alone_cams = [grad_cam(model.keras_model, x[None])[0][0] for x in inputs]
    alone_probs, alone_embs = model.forward(inputs)
    wrong: list[str] = []
    deadline = time.monotonic() + 3.0

    def explain() -> None:
        n = 0
        while time.monotonic() < deadline:
            i = n % len(inputs)
            cam = grad_cam(model.keras_model, inputs[i][None])[0][0]
            if not np.allclose(cam, alone_cams[i], atol=1e-5):
                wrong.append(f"map {i}")
            n += 1

    def search() -> None:
        while time.monotonic() < deadline:
            probs, embs = model.forward(inputs)
            if not (
                np.allclose(probs, alone_probs, atol=1e-5)
                and np.allclose(embs, alone_embs, atol=1e-5)
            ):
                wrong.append("search")

    threads = [threading.Thread(target=f) for f in (explain, explain, search, search)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
