"""`vitrine bench quality`: do the listing-photo rules catch the defects they are for?

Generates N items as marketplace-framed photos, each with one defective copy
(`vitrine.pipeline.synthetic.quality_set`: blurred, too small, coloured or cluttered background,
product
tiny or cut off, too dark), measures every photo through the worker's own path
(`preprocess_bytes(with_quality=True)`: the same decode, JPEG draft included, and the same
pixels the worker measures), judges it with the rules in settings (`quality_*`, the
defaults of view `quality_issues`) and reports precision and recall per rule: a rule's
positives are the photos whose defect must trip it (`RULES_OF`). Also what measuring costs
per photo, on top of the decode the worker does anyway.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from vitrine.ops.data import fashion_mnist
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.pipeline.inference.preprocess import measured_copy, preprocess_bytes
from vitrine.pipeline.inference.quality import REASONS, failed_rules, measure_quality
from vitrine.pipeline.synthetic.quality_set import quality_photos
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.pipeline.types import ModelSpec
from vitrine.settings import Settings

GOAL = 0.95


def run_quality_bench(
    settings: Settings, *, items: int, seed: int, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    data = fashion_mnist(None, sample=not DEBIAN_DIR.is_dir())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.x_test), size=min(items, len(data.x_test)), replace=False)
    spec = ModelSpec.from_dict(json.loads((settings.model_dir / "model.json").read_text()))
    rules, limits = settings.quality_rules, settings.image_limits
    counts: dict[str, Counter[str]] = {code: Counter() for code in REASONS}
    defects: Counter[str] = Counter()
    photos, measure_s = 0, 0.0
    with progress("measuring photos", 2 * len(chosen)) as tick:
        for photo in quality_photos(data.x_test[chosen], seed=seed):
            _, info = preprocess_bytes(
                photo.data, spec.preprocess, limits=limits, with_quality=True
            )
            assert info.quality is not None
            got = set(failed_rules(info.quality, rules))
            for code, tally in counts.items():
                tally[_outcome(code in got, code in photo.expected)] += 1
            defects[photo.defect or "clean"] += 1
            if photos < 200:  # the cost alone, on the pixels the worker decoded
                seen, info = measured_copy(photo.data, limits=limits)
                t0 = time.perf_counter()
                measure_quality(seen, (info.width, info.height))
                measure_s += time.perf_counter() - t0
            photos += 1
            tick(1)
    per_rule = {code: _scores(tally) for code, tally in counts.items()}
    judged = [s for s in per_rule.values() if s["positives"]]
    return {
        "items": len(chosen),
        "photos": photos,
        "seed": seed,
        "photos_by_defect": dict(sorted(defects.items())),
        "rules": {k: v for k, v in sorted(vars(rules).items())},
        "per_rule": per_rule,
        "goal": GOAL,
        "all_rules_meet_goal": all(
            (s["precision"] or 0.0) >= GOAL and s["recall"] >= GOAL for s in judged
        ),
        "measure_ms_per_photo": round(1000 * measure_s / max(1, min(photos, 200)), 2),
    }


def _outcome(fired: bool, expected: bool) -> str:
    return {(True, True): "tp", (True, False): "fp", (False, True): "fn"}.get(
        (fired, expected), "tn"
    )


def _scores(tally: Counter[str]) -> dict[str, Any]:
    """Precision and recall of one rule (None where it has no positives to find; a rule
    with no generated defect, such as `too_bright`, reports its false alarms only)."""
    tp, fp, fn = tally["tp"], tally["fp"], tally["fn"]
    return {
        "positives": tp + fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "false_positives": fp,
        "false_negatives": fn,
    }
