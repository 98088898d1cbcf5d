"""`python -m vitrine_producer URI --merchant M [--sku S]`: publish one upload from a shell.

Scripts branch on the exit status, people read one line: 0 prints the task id, 2 is bad
input or no broker configured, 3 an unreachable broker, 1 any other broker error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from vitrine_producer.client import submit_upload
from vitrine_producer.errors import (
    BrokerUnavailableError,
    InvalidUpload,
    ProducerConfigError,
    ProducerError,
)
from vitrine_producer.names import REDIS_URL_ENV, UPLOADS_QUEUE

PROG = "python -m vitrine_producer"
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block on errors; a script's log wants one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description="Publish one vitrine upload event.")
    parser.add_argument("uri", help="where the workers read the image (https://... or a path)")
    parser.add_argument("--merchant", required=True, help="the merchant's id")
    parser.add_argument("--sku", default=None, help="the product id (optional)")
    parser.add_argument("--queue", default=UPLOADS_QUEUE, help="default: %(default)s")
    parser.add_argument("--redis-url", default=None, help=f"default: ${REDIS_URL_ENV}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        task_id = submit_upload(
            args.uri,
            merchant_id=args.merchant,
            sku=args.sku,
            redis_url=args.redis_url,
            queue=args.queue,
        )
    except (InvalidUpload, ProducerConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokerUnavailableError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ProducerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(task_id)
    return 0
