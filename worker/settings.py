"""The one place vitrine reads its environment.

Every knob is an environment variable; unset `DATABASE_URL` / `REDIS_URL` mean
"start the embedded servers". `get_settings()` caches, so the environment is read once
per process and every module sees the same values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.types import ImageLimits

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "fashion-cnn"
# A small slice of Fashion-MNIST shipped in the repo: the demo and tests need no download.
SAMPLE_FASHION_DIR = REPO_ROOT / "tests" / "data" / "fashion-mnist-slice"


def _default_data_dir() -> Path:
    """`$XDG_DATA_HOME/vitrine`, else `~/.local/share/vitrine` (the XDG default)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "vitrine"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "VITRINE_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "VITRINE_REDIS_URL")
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    model_dir: Path = DEFAULT_MODEL_DIR

    # Worker behaviour
    worker_concurrency: int = 2
    task_soft_time_limit: int = 60
    task_time_limit: int = 90
    max_retries: int = 5
    batch_size: int = 64

    # Input limits: bad input must fail the row, never the worker.
    max_file_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    fetch_timeout_s: float = 10.0

    @property
    def embedded_dir(self) -> Path:
        return self.data_dir / "services"

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_file_bytes, max_pixels=self.max_image_pixels)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
