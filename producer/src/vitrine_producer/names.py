"""Wire names shared with the vitrine workers.

They are copied here, not imported from `vitrine.worker.names`, so that this package installs
without vitrine (and its TensorFlow and Celery); tests/unit/test_producer.py checks
that the copies still equal the workers' constants.
"""

from __future__ import annotations

from typing import Final

#: The task the workers run for one upload event (kwargs uri, merchant_id, sku).
INGEST_TASK: Final = "vitrine.ingest"
#: The task the workers run for one shopper's review photo of a listing (kwargs uri,
#: merchant_id, sku, review_ref).
REVIEW_TASK: Final = "vitrine.review"
#: The queue, and so the Redis list, the workers consume upload events from.
UPLOADS_QUEUE: Final = "uploads"
#: The environment variable that names the broker when no URL is passed.
REDIS_URL_ENV: Final = "REDIS_URL"
