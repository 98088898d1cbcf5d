"""`vitrine bench catalog`: is what people read true, on one realistic catalogue?

Each feature has its own bench on photos made for it; this one puts them together the
way a shop's catalogue does, and runs them through the real path (register the upload
events, a real worker process, PostgreSQL's views and functions) in a scratch database:

- items of every class photographed on white, as transparent cut-outs (PNG, WebP) and in
  the studio (JPEG), several items per class, listed by several merchants;
- re-uploads of the same bytes under another SKU, and by another merchant;
- edited copies (crop, brightness, watermark, padding, resize, JPEG:
`vitrine.pipeline.synthetic.republish`)
  listed again, by the same or another merchant;
- photos of things in none of the categories (`vitrine.pipeline.synthetic.foreign`);
- a person's decisions: the items a merchandiser would fix from the low-confidence queue
  (confidence under 0.6, the model wrong) relabelled with their true class.

It reports listings kept (one row per upload event, equal to the uploads), the accuracy
of the effective label people read (a person's decision, else unknown, else the model's),
the unknown outcome's AUROC, precision and recall, near-duplicate precision and recall on
view `duplicate_candidates`, and similar-item precision@5 within the class; each by the
photo style too (`by_style`).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import Engine, text

from vitrine.bench.search import _drop_database, _scratch_database
from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.ops.context import Context
from vitrine.ops.data import fashion_mnist
from vitrine.ops.dispatch import process_items
from vitrine.ops.errors import UserError
from vitrine.ops.ingest import staged
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.ops.schema import upgrade_database
from vitrine.ops.uploads import file_uri, register_uploads
from vitrine.pipeline.evaluation.shop_floor import roc_auc
from vitrine.pipeline.synthetic.foreign import FOREIGN_LABEL, STYLES, make_foreign_photo
from vitrine.pipeline.synthetic.foreign import KINDS as FOREIGN_KINDS
from vitrine.pipeline.synthetic.photos import PALETTE, make_product_photo
from vitrine.pipeline.synthetic.republish import edit
from vitrine.pipeline.synthetic.studio import make_studio_photo
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.pipeline.types import FASHION_MNIST_LABELS, Upload
from vitrine.worker.processing import WorkItem

BENCH_QUEUE = "bench-catalog"
LOW_CONFIDENCE = 0.6  # the desk's low-confidence queue: what a person would fix
MERCHANTS = 4


@dataclass(frozen=True)
class Photo:
    """One upload the catalogue holds, and the truth about it."""

    file: str
    merchant: str
    sku: str
    label: str  # a class, or FOREIGN_LABEL
    style: str  # white, transparent, studio (foreign: also full frame)
    item: int  # equal items are the same product (duplicates); foreign: -1 - n


def run_catalog_bench(
    ctx: Context,
    *,
    items: int,
    foreign: int,
    seed: int,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    from vitrine.embedded.launcher import running_worker

    if items < 10 or foreign < 1:
        raise UserError("bench catalog needs --items >= 10 and --foreign >= 1")
    started = time.perf_counter()
    data = fashion_mnist(None, sample=not DEBIAN_DIR.is_dir())
    scratch = _scratch_database(ctx.database_url(), reuse=False)
    out: dict[str, Any] = {"items": items, "foreign_photos": foreign, "seed": seed}
    try:
        upgrade_database(scratch, ctx.settings.model_dir)
        engine = make_engine(scratch)
        with tempfile.TemporaryDirectory() as tmp:
            photos = _catalogue(Path(tmp), data, items=items, foreign=foreign, seed=seed)
            uploads = staged(
                ctx,
                [Upload(file_uri(Path(tmp) / p.file), p.merchant, p.sku) for p in photos],
            )
        recorded = register_uploads(engine, uploads)
        ids = [r.image_id for r in recorded]
        urls = ctx.urls()
        bench_urls = type(urls)(scratch, urls.redis_url)
        with running_worker(
            bench_urls,
            concurrency=ctx.settings.worker_concurrency,
            log_path=ctx.settings.data_dir / "logs" / "bench-catalog-worker.log",
            queues=[BENCH_QUEUE],
        ):
            summary = process_items(
                ctx,
                [WorkItem(i, u.uri) for i, u in zip(ids, uploads, strict=True)],
                workers=0,
                description="catalogue",
                queue=BENCH_QUEUE,
                progress=progress,
            )
        decided = _decide(engine, photos, ids)
        out["uploads"] = len(photos)
        out["failed"] = summary.failed
        out.update(_measure(engine, photos, ids, decided))
        engine.dispose()
        _remove(uploads)
    finally:
        _drop_database(ctx.database_url(), scratch)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# --------------------------------------------------------------------------- the catalogue


def _catalogue(folder: Path, data: Any, *, items: int, foreign: int, seed: int) -> list[Photo]:
    """Write the catalogue's photos into `folder`; the truth about each."""
    rng = np.random.default_rng(seed)
    styles = ("white", "transparent", "studio")
    chosen = rng.choice(len(data.x_test), size=min(items, len(data.x_test)), replace=False)
    photos: list[Photo] = []

    def add(img: Image.Image, fmt: str, **truth: Any) -> Photo:
        name = f"{len(photos):05d}.{fmt.lower().replace('jpeg', 'jpg')}"
        _save(img, folder / name, fmt, rng)
        photos.append(Photo(file=name, **truth))
        return photos[-1]

    for n, index in enumerate(chosen):
        item, label = data.x_test[index], FASHION_MNIST_LABELS[int(data.y_test[index])]
        style = styles[n % 3]
        img, fmt = _product(item, style, rng)
        merchant = f"shop-{int(rng.integers(MERCHANTS))}"
        original = add(
            img, fmt, merchant=merchant, sku=f"SKU-{n}", label=label, style=style, item=n
        )
        roll = rng.random()
        if roll < 0.15:  # the same bytes again: under another SKU, or by another merchant
            again = folder / f"{len(photos):05d}{Path(original.file).suffix}"
            again.write_bytes((folder / original.file).read_bytes())
            other = merchant if rng.random() < 0.5 else f"shop-{(int(merchant[-1]) + 1) % 4}"
            photos.append(Photo(again.name, other, f"SKU-{n}-b", label, style, n))
        elif roll < 0.35:  # an edited copy, re-published
            flat = _flat(img)
            copy, _edits = edit(flat, rng)
            other = f"shop-{int(rng.integers(MERCHANTS))}"
            add(copy, "JPEG", merchant=other, sku=f"SKU-{n}-c", label=label, style=style, item=n)
    kinds = list(FOREIGN_KINDS)
    for n in range(foreign):
        kind, style = kinds[n % len(kinds)], STYLES[(n // len(kinds)) % len(STYLES)]
        img, meta = make_foreign_photo(kind, style, rng=rng)
        fmt = "PNG" if img.mode == "RGBA" else "JPEG"
        add(
            img,
            fmt,
            merchant=f"shop-{int(rng.integers(MERCHANTS))}",
            sku=f"F-{n}",
            label=FOREIGN_LABEL,
            style=str(meta["style"]),
            item=-1 - n,
        )
    return photos


def _product(item: np.ndarray, style: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """An item photographed in `style`, and the format it is listed in."""
    if style == "studio":
        photo, _ = make_studio_photo(item, rng=rng, palette=PALETTE)
        return photo, "JPEG"
    while True:  # the generator draws the backdrop: draw until it is the style asked for
        photo, meta = make_product_photo(item, rng=rng, size_range=(500, 1400))
        if (meta["background"] == "transparent") == (style == "transparent"):
            return photo, ("PNG" if rng.random() < 0.5 else "WEBP") if style != "white" else "JPEG"


def _flat(img: Image.Image) -> Image.Image:
    if img.mode != "RGBA":
        return img.convert("RGB")
    white = Image.new("RGB", img.size, (255, 255, 255))
    white.paste(img, mask=img.getchannel("A"))
    return white


def _save(img: Image.Image, path: Path, fmt: str, rng: np.random.Generator) -> None:
    buf = io.BytesIO()
    if fmt == "JPEG":
        _flat(img).save(buf, "JPEG", quality=int(rng.integers(60, 96)))
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=90)
    else:
        img.save(buf, "PNG", compress_level=1)
    path.write_bytes(buf.getvalue())


def _remove(uploads: list[Upload]) -> None:
    """The staged links of the catalogue's photos (the bench leaves no upload behind)."""
    for upload in uploads:
        Path(upload.uri.removeprefix("file://")).unlink(missing_ok=True)


# --------------------------------------------------------------------------- a person decides


def _decide(engine: Engine, photos: list[Photo], ids: list[int]) -> set[int]:
    """Relabel, with its true class, every item the model got wrong with confidence under
    LOW_CONFIDENCE: what a merchandiser working the low-confidence queue would fix."""
    truth = {i: p.label for i, p in zip(ids, photos, strict=True) if p.label != FOREIGN_LABEL}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.image_id, p.label, p.confidence FROM predictions p "
                "JOIN active_model m ON m.id = p.model_id WHERE p.image_id = ANY(:ids)"
            ),
            {"ids": list(truth)},
        ).all()
    decided = set()
    with engine.begin() as conn:
        for image_id, label, confidence in rows:
            if confidence < LOW_CONFIDENCE and label != truth[image_id]:
                repository.record_correction(
                    conn,
                    image_id=image_id,
                    action="relabel",
                    label=truth[image_id],
                    queue="low_confidence",
                    decided_by="bench",
                )
                decided.add(int(image_id))
    return decided


# --------------------------------------------------------------------------- measuring


def _measure(
    engine: Engine, photos: list[Photo], ids: list[int], decided: set[int]
) -> dict[str, Any]:
    truth = dict(zip(ids, photos, strict=True))
    with engine.connect() as conn:
        listings = int(conn.execute(text("SELECT count(*) FROM images")).scalar_one())
        labels = {
            int(r.image_id): r
            for r in conn.execute(
                text(
                    "SELECT l.image_id, l.label, l.model_label, p.unknown, p.unknown_score "
                    "FROM image_labels l JOIN predictions p ON p.image_id = l.image_id "
                    "JOIN active_model m ON m.id = p.model_id"
                )
            )
        }
        pairs = {
            (min(a, b), max(a, b))
            for a, b in conn.execute(
                text("SELECT image_id, duplicate_id FROM duplicate_candidates")
            ).all()
        }
        neighbours = {
            i: [
                int(r.image_id)
                for r in conn.execute(text("SELECT image_id FROM similar_images(:i, 5)"), {"i": i})
            ]
            for i in ids
            if truth[i].label != FOREIGN_LABEL and i in labels
        }
    result: dict[str, Any] = {
        "listings_kept": listings,
        "people_decided": len(decided),
    }
    result.update(_labels(truth, labels, decided))
    result.update(_unknown(truth, labels))
    result.update(_duplicates(_catalogue_only(truth), pairs))
    result["duplicate_pairs_among_foreign"] = sum(
        truth[a].label == FOREIGN_LABEL and truth[b].label == FOREIGN_LABEL
        for a, b in pairs
        if a in truth and b in truth
    )
    result.update(_similar(truth, neighbours))
    by_style: dict[str, dict[str, Any]] = defaultdict(dict)
    for style in sorted({p.style for p in photos}):
        chosen = {i: p for i, p in truth.items() if p.style == style}
        part: dict[str, Any] = {}
        part.update(_labels(chosen, labels, decided))
        part.update(_unknown(_against(truth, chosen), labels))
        part.update(_duplicates(_catalogue_only(chosen), pairs))
        part.update(_similar(chosen, {i: n for i, n in neighbours.items() if i in chosen}))
        by_style[style] = {k: v for k, v in part.items() if v is not None}
    result["by_style"] = dict(by_style)
    return result


def _against(truth: dict[int, Photo], chosen: dict[int, Photo]) -> dict[int, Photo]:
    """`chosen` photos and what their unknown figures are measured against: a style with
    foreign and catalogue photos on its own; one with only either, with all of the other."""
    kinds = {p.label == FOREIGN_LABEL for p in chosen.values()}
    if len(kinds) == 2:
        return chosen
    (only_foreign,) = kinds
    other = {i: p for i, p in truth.items() if (p.label == FOREIGN_LABEL) != only_foreign}
    return {**chosen, **other}


def _catalogue_only(truth: dict[int, Photo]) -> dict[int, Photo]:
    """Near-duplicates are measured among catalogue photos. The foreign generator draws
    each kind from a few shapes on a plain backdrop, so two of its circuit boards can be
    as alike as two crops of one photo; such pairs are counted apart
    (`duplicate_pairs_among_foreign`), not mixed into precision."""
    return {i: p for i, p in truth.items() if p.label != FOREIGN_LABEL}


def _labels(truth: dict[int, Photo], labels: dict[int, Any], decided: set[int]) -> dict[str, Any]:
    known = [i for i, p in truth.items() if p.label != FOREIGN_LABEL and i in labels]
    if not known:
        return {}
    model = np.mean([labels[i].model_label == truth[i].label for i in known])
    effective = np.mean([labels[i].label == truth[i].label for i in known])
    return {
        "model_label_accuracy": round(float(model), 4),
        "effective_label_accuracy": round(float(effective), 4),
    }


def _unknown(truth: dict[int, Photo], labels: dict[int, Any]) -> dict[str, Any]:
    rows = [(p.label == FOREIGN_LABEL, labels[i]) for i, p in truth.items() if i in labels]
    if not rows or rows[0][1].unknown_score is None:
        return {"unknown_auroc": None}
    foreign = np.array([f for f, _ in rows])
    flagged = np.array([bool(r.unknown) for _, r in rows])
    scores = np.array([float(r.unknown_score) for _, r in rows])
    if foreign.all() or not foreign.any():
        return {"unknown_rate": round(float(flagged.mean()), 4)}
    hit = int((flagged & foreign).sum())
    return {
        "unknown_auroc": round(roc_auc(scores, foreign), 4),
        "unknown_precision": round(hit / max(1, int(flagged.sum())), 4),
        "unknown_recall": round(hit / int(foreign.sum()), 4),
        "unknown_false_rate": round(float(flagged[~foreign].mean()), 4),
    }


def _duplicates(truth: dict[int, Photo], pairs: set[tuple[int, int]]) -> dict[str, Any]:
    by_item: dict[int, list[int]] = defaultdict(list)
    for i, p in truth.items():
        by_item[p.item].append(i)
    real = {
        (min(a, b), max(a, b)) for group in by_item.values() for a in group for b in group if a < b
    }
    found = {(a, b) for a, b in pairs if a in truth and b in truth}
    if not real and not found:
        return {"duplicate_precision": None, "duplicate_recall": None}
    hit = len(found & real)
    return {
        "duplicate_pairs_found": len(found),
        "duplicate_pairs_true": len(real),
        "duplicate_precision": round(hit / len(found), 4) if found else 1.0,
        "duplicate_recall": round(hit / len(real), 4) if real else None,
    }


def _similar(truth: dict[int, Photo], neighbours: dict[int, list[int]]) -> dict[str, Any]:
    """Share of the 5 nearest that show another item of the same class (copies of the
    same item do not count: they are the duplicates' business)."""
    scores = []
    for i, near in neighbours.items():
        others = [n for n in near if n in truth and truth[n].item != truth[i].item][:5]
        if others:
            scores.append(np.mean([truth[n].label == truth[i].label for n in others]))
    return {"similar_precision_at_5": round(float(np.mean(scores)), 4) if scores else None}
