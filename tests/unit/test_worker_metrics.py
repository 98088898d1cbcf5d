"""Metric labels from real failure reasons, stage timing, and Celery's task events."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from vitrine.pipeline.inference.decode import BadImageError, decode
from vitrine.pipeline.types import ImageLimits
from vitrine.settings import Settings
from vitrine.sources.fetch import fetch_bytes
from vitrine.worker.celery_config import celery_config
from vitrine.worker.metrics import REASON_CLASSES, StageTimer, reason_class, report_outcomes


def _reason(call) -> str:  # type: ignore[no-untyped-def]
    try:
        call()
    except Exception as exc:
        return str(exc)
    raise AssertionError("no failure")


def test_reason_classes_of_real_failures(tmp_path: Path) -> None:
    policy = Settings(file_roots=[tmp_path]).source_policy
    limits = ImageLimits(max_bytes=10, max_pixels=100, max_decode_seconds=5)
    (tmp_path / "big.bin").write_bytes(b"x" * 100)
    (tmp_path / "junk.jpg").write_bytes(b"not a picture at all")
    cases = {
        "fetch": _reason(lambda: fetch_bytes(str(tmp_path / "missing.jpg"), policy)),
        "refused": _reason(lambda: fetch_bytes("/etc/passwd", policy)),
        "limits": _reason(lambda: decode(b"x" * 11, limits=limits)),
        "decode": _reason(
            lambda: decode(b"GIF89a broken", limits=ImageLimits(max_bytes=1000, max_pixels=1000))
        ),
    }
    for expected, reason in cases.items():
        assert reason_class(reason) == expected, reason
    assert reason_class(_reason(lambda: decode(b"", limits=limits))) == "decode"
    assert reason_class("processing took longer than 60s") == "timeout"
    assert reason_class("gave up after 6 tries: HTTP 503 fetching http://h/x.jpg") == "fetch"
    assert (
        reason_class(
            "gave up after 5 attempts: each attempt ended without a result (worker stopped or "
            "timed out)"
        )
        == "worker"
    )
    assert reason_class("could not process image: KeyError: 'x'") == "other"
    assert reason_class(None) == "none"
    assert set(REASON_CLASSES) >= {"none", "fetch", "decode", "limits", "other"}
    assert issubclass(BadImageError, ValueError)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_outcomes_and_stages_are_counted() -> None:
    before_done = _value("vitrine_uploads_total", status="done", reason_class="none")
    before_bad = _value("vitrine_uploads_total", status="failed", reason_class="decode")
    before_fetch = _value("vitrine_stage_seconds_count", stage="fetch")
    timer = StageTimer()
    with timer.stage("fetch"):
        pass
    with timer.stage("forward", record=False):
        pass
    assert set(timer.ms()) == {"fetch_ms"}
    report_outcomes(done=[1, 2], failed={3: "not an image (unreadable header)"})
    assert _value("vitrine_uploads_total", status="done", reason_class="none") == before_done + 2
    bad = _value("vitrine_uploads_total", status="failed", reason_class="decode")
    assert bad == before_bad + 1
    assert _value("vitrine_stage_seconds_count", stage="fetch") == before_fetch + 1


def test_stage_timer_lets_errors_through() -> None:
    with pytest.raises(ZeroDivisionError), StageTimer().stage("write"):
        1 / 0  # noqa: B018


def test_task_events_are_on() -> None:
    config = celery_config(Settings())
    assert config["worker_send_task_events"] is True
    assert config["task_send_sent_event"] is True
