"""Delivery settings whose defaults in Celery do not fit vitrine's workers."""

from __future__ import annotations

from celery.app.defaults import DEFAULTS

from vitrine.settings import Settings
from vitrine.worker.celery_config import celery_config


def test_a_pool_process_has_time_to_load_the_model() -> None:
    """A child loads two networks after the fork; Celery's default wait for its "up"
    message (4 s) killed every replacement on a loaded machine."""
    config = celery_config(Settings())
    assert DEFAULTS["worker_proc_alive_timeout"] == 4.0
    assert config["worker_proc_alive_timeout"] >= 60


def test_lost_work_comes_back() -> None:
    config = celery_config(Settings())
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
