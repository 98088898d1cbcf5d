"""Entry point of `python -m vitrine_producer` (see vitrine_producer.cli)."""

from __future__ import annotations

import sys

from vitrine_producer.cli import main

sys.exit(main())
