"""Finding the training and evaluation data a command was pointed at."""

from __future__ import annotations

from pathlib import Path

from vitrine.ops.errors import UserError
from vitrine.pipeline.training.datasets import (
    DEBIAN_DIR,
    DEBIAN_PACKAGE,
    FashionMNIST,
    load_fashion_mnist,
)
from vitrine.settings import SAMPLE_FASHION_DIR


def fashion_mnist(
    directory: Path | None, *, sample: bool = False, option: str = "--fashion"
) -> FashionMNIST:
    """Fashion-MNIST from `directory` (default: Debian's), or the slice in the repo.

    `option` is the command-line option that names the directory, for the message.
    """
    if sample:
        return load_fashion_mnist(SAMPLE_FASHION_DIR)
    source = directory or DEBIAN_DIR
    if not source.is_dir():
        raise UserError(
            f"Fashion-MNIST not found in {source}: install Debian's {DEBIAN_PACKAGE} "
            f"(apt-get install {DEBIAN_PACKAGE}), or give {option} DIR, a directory with "
            "the four IDX .gz files of the official release"
        )
    try:
        return load_fashion_mnist(source)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
