"""EfficientNet-Lite0's ImageNet features against today's CNN, for a merchant's own taxonomy.

    .venv/bin/python tools/backbone_study.py --taxonomy fashion --per-class 50 200 --json
    .venv/bin/python tools/backbone_study.py --taxonomy home --per-class 10 50 --json

`vitrine train --data DIR` learns a merchant's own classes from their own photos. This
study makes two such catalogues, each photographed on white, as a transparent cut-out and
in the studio, in turn: **home** goods, drawn household, electronics, food and plant
objects of `pipeline/synthetic/foreign.py` (twelve kinds), and **fashion**, the ten
Fashion-MNIST classes as coloured product photos (`pipeline/synthetic/photos.py` and
`studio.py`; training photos from the slice's training items, held-out ones from its
test items). On the same training photos and the same held-out ones it compares:

- **cnn**: what `train --data` does today: the VGG-style CNN from scratch on 28x28 grey
  input (`ops.training.train`; `--cnn-epochs`, 30 by default: the recipe's 80 would take
  half an hour at 200 photos per class here);
- **lite0 + linear**: the 1,280 features the unknown detector already computes for every
  upload (EfficientNet-Lite0 on the object's 160 px colour view), and a softmax
  classifier trained on them (`linear_probe`).

It also times the backbone per photo on this machine in fp32 and with the bf16 grappler
rewrite. Everything is seeded; the JSON carries the figures that docs/training.md shows.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitrine.pipeline.types import FASHION_MNIST_LABELS

HOME = (
    "mug",
    "bottle",
    "clock",
    "lamp",
    "vase",
    "phone",
    "laptop",
    "headphones",
    "remote control",
    "book",
    "apple",
    "potted plant",
)
STYLES = ("white", "transparent", "studio")


def class_names(taxonomy: str) -> tuple[str, ...]:
    return HOME if taxonomy == "home" else FASHION_MNIST_LABELS


def _encoded(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    if img.mode == "RGBA":
        img.save(buf, "PNG")
    else:
        img.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


def photos(taxonomy: str, per_class: int, seed: int, held_out: bool) -> list[tuple[bytes, int]]:
    """`per_class` photos of each class as PNG (transparent) or JPEG bytes, with the class,
    drawn class by class in turn (so the first n * classes are n per class)."""
    rng = np.random.default_rng(seed)
    out = []
    if taxonomy == "home":
        from vitrine.pipeline.synthetic.foreign import make_foreign_photo

        for i in range(per_class):
            for label, kind in enumerate(HOME):
                img, _ = make_foreign_photo(kind, STYLES[(i + label) % 3], rng=rng)
                out.append((_encoded(img), label))
        return out
    from vitrine.pipeline.synthetic.photos import PALETTE, make_product_photo
    from vitrine.pipeline.synthetic.studio import make_studio_photo
    from vitrine.pipeline.training.datasets import load_fashion_mnist
    from vitrine.settings import SAMPLE_FASHION_DIR

    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    x, y = (data.x_test, data.y_test) if held_out else (data.x_train, data.y_train)
    by_class = [np.flatnonzero(y == label) for label in range(len(FASHION_MNIST_LABELS))]
    for i in range(per_class):
        for label, items in enumerate(by_class):
            item = x[items[i % len(items)]]
            if (i + label) % 2:
                img, _ = make_studio_photo(item, rng=rng, palette=PALETTE)
            else:  # on white, or (a share of them) a transparent cut-out
                img, _ = make_product_photo(item, rng=rng)
            out.append((_encoded(img), label))
    return out


def views(blobs: list[tuple[bytes, int]], size: int) -> np.ndarray:
    from vitrine.pipeline.inference.preprocess import object_view

    return np.stack([object_view(Image.open(io.BytesIO(b)), size) for b, _ in blobs])


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, classes: int, *, seed: int, epochs: int = 300
) -> Any:
    """Softmax regression on L2-normalised features (AdamW, full batch, light decay)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((train_x.shape[1],)), keras.layers.Dense(classes)])
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(train_x, train_y, batch_size=len(train_x), epochs=epochs, verbose=0)
    return model


def folder_name(label: str) -> str:
    """A class's folder: "T-shirt/top" would be a folder inside another (the first runs
    of this study lost the class that way, and the CNN's figures with it)."""
    return label.replace(" ", "-").replace("/", "-")


def served(
    names: tuple[str, ...],
    train: list[tuple[bytes, int]],
    test: list[tuple[bytes, int]],
    foreign: list[bytes],
    work: Path,
    seed: int,
    epochs: int | None,
    backbone: str | None = None,
) -> dict[str, float]:
    """`train --data` (today's CNN, or `--backbone lite0`) on a class-per-folder copy of
    `train`, then the model directory as the worker serves it: test accuracy, training
    seconds and, where the model has a detector, how often it says "unknown" for the
    held-out photos of its classes and for `foreign` ones, and its CPU per photo."""
    from vitrine.ops.training import TrainRequest
    from vitrine.ops.training import train as run_training
    from vitrine.pipeline.evaluation.shop_floor import roc_auc
    from vitrine.pipeline.inference.batch import prepare_batch
    from vitrine.pipeline.inference.model import load_model_dir
    from vitrine.settings import get_settings

    data = work / "data"
    for i, (blob, label) in enumerate(train):
        folder = data / folder_name(names[label])
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if blob.startswith(b"\x89PNG") else ".jpg"
        (folder / f"{i:05d}{suffix}").write_bytes(blob)
    limits = get_settings().image_limits
    started = time.perf_counter()
    run_training(
        TrainRequest(
            out=work / "model",
            data=data,
            seed=seed,
            epochs=epochs,
            precision="fp32",
            backbone=backbone,
        ),
        limits=limits,
        log=lambda _: None,
    )
    out = {"train_seconds": round(time.perf_counter() - started, 1)}
    model = load_model_dir(work / "model")
    spec = model.spec.preprocess
    batch = prepare_batch(range(len(test)), lambda i: test[i][0], spec, limits)
    cpu = time.process_time()
    predictions = model.predict(batch.arrays)
    cost = (time.process_time() - cpu) * 1000 / len(batch.keys)
    said = [p.label for p in predictions]
    truth = [folder_name(names[test[k][1]]) for k in batch.keys]
    right = sum(a == b for a, b in zip(said, truth, strict=True))
    out["accuracy"] = round(right / len(test), 4)  # an unreadable photo counts as wrong
    if model.unknown is not None:
        strange = prepare_batch(range(len(foreign)), foreign.__getitem__, spec, limits)
        known = np.array([p.unknown_score for p in predictions])
        far = np.array([p.unknown_score for p in model.predict(strange.arrays)])
        threshold = model.unknown.threshold
        out["unknown_false_rate"] = round(float((known > threshold).mean()), 4)
        out["unknown_recall"] = round(float((far > threshold).mean()), 4)
        both = np.concatenate([far, known])
        is_foreign = np.arange(len(both)) < len(far)
        out["unknown_auroc"] = round(roc_auc(both, is_foreign), 4)
        out["cpu_ms_per_photo"] = round(cost, 2)
    return out


def foreign_photos(taxonomy: str, n: int, seed: int) -> list[bytes]:
    """Photos of none of the taxonomy's classes: drawn things for fashion, and for home
    goods the drawn kinds that are not among them."""
    from vitrine.pipeline.synthetic.foreign import KINDS, make_foreign_photo

    kinds = [k for k in KINDS if taxonomy == "fashion" or k not in HOME]
    rng = np.random.default_rng(seed)
    return [
        _encoded(make_foreign_photo(kinds[i % len(kinds)], STYLES[i % 3], rng=rng)[0])
        for i in range(n)
    ]


def backbone_cost(view_batch: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """CPU ms per photo of the backbone (batches of 32), fp32 and bf16 rewrite."""
    from vitrine.pipeline.inference.unknown import Backbone
    from vitrine.pipeline.training import precision

    costs = {}
    for arithmetic in ("fp32", "bf16"):
        with precision.applied(precision.choose(arithmetic)):
            backbone = Backbone.pretrained(view_batch.shape[1])
            backbone.features(view_batch[:32])  # trace
            best = float("inf")
            for _ in range(rounds):
                cpu = time.process_time()
                backbone.features(view_batch)
                best = min(best, (time.process_time() - cpu) * 1000 / len(view_batch))
            costs[f"{arithmetic}_cpu_ms_per_photo"] = round(best, 2)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taxonomy", choices=("fashion", "home"), default="fashion")
    parser.add_argument("--per-class", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--test-per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--view-size", type=int, default=160)
    parser.add_argument("--cnn-epochs", type=int, default=30)
    parser.add_argument("--foreign", type=int, default=300, help="Photos of none of the classes.")
    parser.add_argument("--json", dest="json_out", action="store_true")
    args = parser.parse_args()

    from vitrine.pipeline.inference.unknown import Backbone

    names = class_names(args.taxonomy)
    test = photos(args.taxonomy, args.test_per_class, args.seed + 1, held_out=True)
    most = photos(args.taxonomy, max(args.per_class), args.seed, held_out=False)
    foreign = foreign_photos(args.taxonomy, args.foreign, args.seed + 2)
    backbone = Backbone.pretrained(args.view_size)
    test_features = backbone.features(views(test, args.view_size))
    test_y = np.array([y for _, y in test])
    all_features = backbone.features(views(most, args.view_size))
    result: dict[str, Any] = {
        "taxonomy": args.taxonomy,
        "classes": len(names),
        "test_photos": len(test),
        "seed": args.seed,
        "cnn_epochs": args.cnn_epochs,
        "runs": {},
    }
    for n in args.per_class:
        train = most[: n * len(names)]  # photos are drawn class by class, in turn
        train_y = np.array([y for _, y in train])
        probe = linear_probe(all_features[: len(train)], train_y, len(names), seed=args.seed)
        predicted = np.asarray(probe(test_features)).argmax(axis=1)
        runs = {}
        for label, choice, epochs in (("cnn", "cnn", args.cnn_epochs), ("lite0", "lite0", None)):
            with tempfile.TemporaryDirectory() as work:
                runs[label] = served(
                    names, train, test, foreign, Path(work), args.seed, epochs, choice
                )
        result["runs"][str(n)] = {
            "lite0_linear_accuracy": round(float((predicted == test_y).mean()), 4),
            "cnn_accuracy": runs["cnn"]["accuracy"],
            "cnn_train_seconds": runs["cnn"]["train_seconds"],
            "lite0_model": runs["lite0"],
        }
        print(json.dumps({n: result["runs"][str(n)]}), flush=True)
    result["backbone"] = backbone_cost(views(test[:128], args.view_size))
    if args.json_out:
        print(json.dumps(result, indent=2))
    else:
        writer = csv.writer(sys.stdout)
        for n, run in result["runs"].items():
            writer.writerow([n, run["cnn_accuracy"], run["lite0_linear_accuracy"]])
        print(result["backbone"])


if __name__ == "__main__":
    main()
