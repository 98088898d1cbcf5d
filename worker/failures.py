"""What a failure is (`classify`) and how work is tried again (`RetryPolicy`), once.

A photo's failure is either transient (a source timed out or answered 5xx: try again
later) or permanent (the file is not an image, the source refused it: its reason is
recorded and it is never retried); a database error (down, restarting, a deadlock
victim) is transient for the whole task (`DATABASE_ERRORS`).

Every retry is Celery's own policy, read from the settings: `max_retries`
(VITRINE_MAX_RETRIES) tries again, each after Celery's exponential backoff with full
jitter (`retry_backoff`, `retry_backoff_max`: VITRINE_RETRY_BACKOFF_S and
VITRINE_RETRY_BACKOFF_MAX_S), then the work fails with its last reason. The plain tasks
get it as their `autoretry_for` options (`RetryPolicy.task_options`) and retry a
transient photo with `Task.retry(countdown=...)`; two paths apply the same numbers by
hand, and why they cannot be Celery's own retry:

* live uploads (`vitrine.worker.live`) are celery-batches requests, which have no
  `Task.retry`: the event is published again under its task id, its retries counted in
  its `attempt` kwarg instead of the request's `retries`;
* the reaper (`vitrine.worker.reaper`) is no retry of a task but recovery of work whose
  message was lost: it sends `processing` rows older than `stale_after_s` again, and a
  claim counted past `max_attempts` (not `max_retries`) ends the image failed.

`rehash_batch` sorts with `classify` too but words every non-transient failure with
`failure_reason`, as it always did (its failures are reported, never stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.exc import DBAPIError, OperationalError

from vitrine.pipeline.inference.batch import failure_reason
from vitrine.pipeline.types import GAVE_UP_PREFIX
from vitrine.settings import Settings, get_settings
from vitrine.sources.fetch import PermanentError, TransientError

#: Errors that fail a whole task but not its work: retried with the policy's backoff.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError, DBAPIError)


@dataclass(frozen=True)
class Failure:
    """One photo's failure: whether to try again, and the one-line reason."""

    transient: bool
    reason: str


def classify(exc: Exception) -> Failure:
    """Transient (a source's passing trouble) or permanent, with the reason to record:
    a source's own message as it is, anything else as `failure_reason` words it."""
    if isinstance(exc, TransientError):
        return Failure(True, str(exc))
    if isinstance(exc, PermanentError):
        return Failure(False, str(exc))
    return Failure(False, failure_reason(exc))


@dataclass(frozen=True)
class RetryPolicy:
    """Celery's retry options, and the two questions a retry asks of them."""

    max_retries: int
    backoff: int
    backoff_max: int
    jitter: bool = True

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetryPolicy:
        settings = settings or get_settings()
        return cls(settings.max_retries, settings.retry_backoff_s, settings.retry_backoff_max_s)

    @classmethod
    def of_task(cls, task: Task) -> RetryPolicy:
        """The policy a task was declared with (`task_options`)."""
        return cls(task.max_retries, task.retry_backoff, task.retry_backoff_max, task.retry_jitter)

    def task_options(self) -> dict[str, Any]:
        """`@app.task(**options)`: bound, database errors retried by Celery itself."""
        return {
            "bind": True,
            "autoretry_for": DATABASE_ERRORS,
            "max_retries": self.max_retries,
            "retry_backoff": self.backoff,
            "retry_backoff_max": self.backoff_max,
            "retry_jitter": self.jitter,
        }

    def exhausted(self, retries: int) -> bool:
        """Whether work already retried `retries` times has had all its tries."""
        return retries >= self.max_retries

    def countdown(self, retries: int) -> int:
        """Seconds before the next try of work retried `retries` times so far: Celery's
        own formula, the one `autoretry_for` uses."""
        return int(
            get_exponential_backoff_interval(
                factor=self.backoff,
                retries=retries,
                maximum=self.backoff_max,
                full_jitter=self.jitter,
            )
        )

    @staticmethod
    def gave_up(retries: int, reason: str) -> str:
        """The failure recorded once the tries are spent: its prefix is what marks it as
        worth sending again (`vitrine.pipeline.types.worth_resending`)."""
        return f"{GAVE_UP_PREFIX}{retries + 1} tries: {reason}"
