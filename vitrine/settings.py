"""The one place vitrine reads its environment.

Every knob is an environment variable; unset `DATABASE_URL` / `REDIS_URL` mean
"start the embedded servers". `get_settings()` caches, so the environment is read once
per process and every module sees the same values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vitrine.pipeline.inference.quality import QualityRules, rule_names
from vitrine.pipeline.types import DEFAULT_MAX_DECODE_SECONDS, ImageLimits
from vitrine.sources.policy import SourcePolicy, parse_networks

#: Files shipped inside the package (a wheel holds them too): the default model and a
#: small slice of Fashion-MNIST, so the demo and the tests need no download.
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "models" / "fashion-cnn"
SAMPLE_FASHION_DIR = PACKAGE_DIR / "data" / "fashion-mnist-slice"


def _default_data_dir() -> Path:
    """`$XDG_DATA_HOME/vitrine`, else `~/.local/share/vitrine` (the XDG default)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "vitrine"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    # repr=False: URLs carry passwords, and settings end up in tracebacks and test output.
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "VITRINE_DATABASE_URL"),
        repr=False,
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "VITRINE_REDIS_URL"),
        repr=False,
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    #: As root: where the embedded PostgreSQL's files go when its unprivileged account
    #: cannot reach the data directory (a 0700 home), instead of loosening that
    #: directory's mode (`vitrine.embedded.pg_account`).
    embedded_system_dir: Path = Path("/var/lib/vitrine")
    model_dir: Path = DEFAULT_MODEL_DIR

    # Worker behaviour
    worker_concurrency: int = 2
    task_soft_time_limit: int = 60
    task_time_limit: int = 90
    batch_size: int = 64
    #: A live upload event goes to a free pool process at once; while every process is
    #: busy, events gather into one forward pass and one transaction: up to this many,
    #: until a process returns, or this many ms at most (vitrine.worker.live).
    live_batch_size: int = 32
    live_batch_wait_ms: float = 25.0
    #: CPU priority of a worker's processes (0 normal, up to 19 lowest): a backfill worker
    #: at 10 leaves the cores to live uploads when both run on one host.
    worker_nice: int = Field(default=0, ge=0, le=19)
    #: An upload whose bytes the model has embedded already reuses that result (no decode,
    #: no forward pass). Off only where every upload must be processed: `bench ingest`,
    #: which sends the same photos down every path.
    reuse_known_bytes: bool = True
    #: A backfill of at least this many images into an inactive model drops the model's
    #: HNSW index and builds it after the load, both CONCURRENTLY (vitrine.ops.ingest.backfill).
    backfill_index_after_rows: int = Field(default=1000, ge=1)

    # Recovery: Celery's exponential backoff with full jitter for transient errors
    # (`retry_backoff_s` * 2^n seconds, drawn from [0, that], at most `retry_backoff_max_s`);
    # an upload whose work was started `max_attempts` times ends failed.
    max_retries: int = 5
    retry_backoff_s: int = 2
    retry_backoff_max_s: int = 120  # below the broker's visibility timeout (300 s)
    max_attempts: int = 5
    #: Every this many seconds one worker re-sends uploads stuck longer than
    #: `stale_after_s` (0 turns the reaper off). Must exceed the task time limit.
    reaper_interval_s: float = 60.0
    stale_after_s: float = 600.0

    # Input limits: bad input must fail the row, never the worker.
    max_file_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    #: Seconds decoding one image may take (vitrine.pipeline.inference.decode); past it the upload
    # fails.
    max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS
    #: Seconds one image's fetch may take in all (every redirect, connect, headers, body):
    #: a server that stalls or trickles fails that image alone, as a retryable error.
    fetch_timeout_s: float = 10.0
    fetch_max_redirects: int = 5
    #: Fetches one batch runs at once (threads: the work is waiting on the network) ...
    fetch_concurrency: int = Field(default=8, ge=1)
    #: ... and at most this many to one host:port, so one slow merchant cannot take them all.
    fetch_per_host: int = Field(default=4, ge=1)
    #: Seconds a batch may spend fetching in all; what has not started by then is retried
    #: later. Keep it well under `task_soft_time_limit`: decoding and the model come after.
    fetch_batch_deadline_s: float = Field(default=30.0, gt=0)

    # Where uploads may come from (vitrine.sources.policy): comma-separated lists.
    #: Networks http(s) fetches may reach although they are not public (an internal store).
    fetch_allow_networks: Annotated[list[str], NoDecode] = []
    #: Directories local files are read from; default: the upload directory alone.
    file_roots: Annotated[list[Path], NoDecode] = []
    #: Where the CLI stages local files it submits, and where uploaded files land.
    upload_dir: Path | None = None

    # Listing-photo quality rules (vitrine.pipeline.inference.quality.QualityRules; `vitrine bench
    # quality`).
    # The view `quality_issues` reads the same thresholds from the PostgreSQL settings
    # vitrine.quality_<name> (docs/sql.md); the defaults are equal (tests/unit/test_quality).
    quality_min_side: int = QualityRules.min_side
    quality_min_white_share: float = QualityRules.min_white_share
    quality_min_span: float = QualityRules.min_span
    quality_min_sharpness: float = QualityRules.min_sharpness
    quality_min_highlight: float = QualityRules.min_highlight
    quality_max_object_luminance: float = QualityRules.max_object_luminance

    #: Neighbours further than this cosine distance are not "similar": searches return
    #: fewer than k, or none ("no close match"). In-class neighbours of catalogue photos lie
    #: within 0.21 (99th percentile of the 10th nearest, docs/sql.md); a search by a photo
    #: the model flags as none of its categories returns none at all.
    similar_max_distance: float = Field(default=0.3, gt=0, le=2)

    # HTTP API (`vitrine serve`)
    #: Largest request body accepted where a photo may come (uploads, reviews, searches;
    #: 413 beyond); default: the file limit plus 1 MiB for the rest of a multipart form.
    #: Every other route takes at most `api_max_form_bytes`.
    api_max_body_bytes: int | None = Field(default=None, ge=1024)
    api_max_form_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Per-token limits (the `limits` package's notation, `;` between several; "off":
    #: none): uploads and reviews, and searches by photo. 429 with Retry-After beyond.
    api_upload_rate: str = "1200/minute;100/second"
    api_search_rate: str = "120/minute;10/second"
    #: Per-address limit on review-desk login attempts.
    desk_login_rate: str = "10/minute"
    #: Where the counts live: "memory" (each API process counts alone) or "broker" (the
    #: Redis of REDIS_URL, shared by every API process and host).
    rate_limit_storage: Literal["memory", "broker"] = "memory"
    #: Hours a review-desk login lasts (logout and token revocation end it sooner).
    desk_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: Who may read the API's `/metrics`: "token" (a platform client's bearer token) or
    #: "public". With `api_metrics_port` set, metrics move to that port on
    #: `api_metrics_host` (for a scraper on a private network) and `/metrics` is gone.
    api_metrics: Literal["token", "public"] = "token"
    api_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    api_metrics_host: str = "127.0.0.1"

    # Observability (docs/metrics.md)
    #: Port a worker's main process serves Prometheus metrics on at /metrics (None: off;
    #: 9808 in the Docker image and k8s manifests), on `metrics_host` (loopback unless a
    #: scraper on another host must reach it: the compose file and manifests say 0.0.0.0).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    #: "json": one JSON object per log line; "text": readable key=value lines.
    log_format: Literal["text", "json"] = "text"
    #: File a worker touches every `heartbeat_interval_s` (`vitrine worker-check`);
    #: default `VITRINE_DATA_DIR/worker.heartbeat`.
    heartbeat_file: Path | None = None
    heartbeat_interval_s: float = Field(default=10.0, gt=0)

    @field_validator("fetch_allow_networks", "file_roots", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_upload_rate", "api_search_rate", "desk_login_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse_many

        if value.strip().lower() != "off":
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"not a rate limit: {value!r} (write e.g. 120/minute, or off)"
                ) from None
        return value

    @field_validator("fetch_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo fails at start-up, not on the first fetch
        return value

    @property
    def embedded_dir(self) -> Path:
        return self.data_dir / "services"

    @property
    def heartbeat_path(self) -> Path:
        return self.heartbeat_file or self.data_dir / "worker.heartbeat"

    @property
    def api_body_limit(self) -> int:
        return self.api_max_body_bytes or self.max_file_bytes + 1024 * 1024

    @property
    def uploads(self) -> Path:
        return self.upload_dir or self.data_dir / "uploads"

    @property
    def source_policy(self) -> SourcePolicy:
        return SourcePolicy(
            allowed_networks=parse_networks(self.fetch_allow_networks),
            file_roots=tuple(self.file_roots) or (self.uploads,),
            max_bytes=self.max_file_bytes,
            timeout=self.fetch_timeout_s,
            max_redirects=self.fetch_max_redirects,
        )

    @property
    def quality_rules(self) -> QualityRules:
        return QualityRules(**{n: getattr(self, f"quality_{n}") for n in rule_names()})

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_file_bytes,
            max_pixels=self.max_image_pixels,
            max_decode_seconds=self.max_decode_seconds,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
