"""Wire names: what producers, workers and launchers must agree on, spelled once.

Task and queue names are the message contract of docs/producers.md; changing one breaks
every producer that publishes it.
"""

from __future__ import annotations

#: One upload event, as the platform publishes it (kwargs uri, merchant_id, sku).
INGEST_TASK = "vitrine.ingest"
#: A shopper's review photo of a listing (kwargs uri, merchant_id, sku, review_ref).
REVIEW_TASK = "vitrine.review"
#: A chunk of already-registered uploads: one forward pass for the chunk (bulk ingest).
INGEST_BATCH_TASK = "vitrine.ingest_batch"
#: A chunk of done images (re-)embedded with a named model (backfill).
EMBED_BATCH_TASK = "vitrine.embed_batch"
#: A chunk of done images whose perceptual hash and quality are measured again
#: (`vitrine backfill --hashes`, after the hash recipe changed).
REHASH_BATCH_TASK = "vitrine.rehash_batch"

UPLOADS_QUEUE = "uploads"
BACKFILL_QUEUE = "backfill"
ALL_QUEUES: tuple[str, ...] = (UPLOADS_QUEUE, BACKFILL_QUEUE)

#: Set by a launcher to a pipe's write end; the worker writes b"1" there once it consumes.
READY_FD_ENV = "VITRINE_READY_FD"
