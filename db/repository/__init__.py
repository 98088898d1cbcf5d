"""Every read and write the pipeline makes, as plain functions over a Connection.

Each function takes an explicit `sqlalchemy.Connection`, takes its other arguments by
keyword, and never commits: the caller owns the transaction
(`with engine.begin() as conn: ...`). Batched writes are one statement per table for
the whole batch. Import from here; the submodules are an implementation detail:

- `models`: registration, the active model, per-model HNSW indexes;
- `images`: the life cycle below (writes);
- `lookups`: statuses, labels and counts (reads);
- `search`: similarity, and the SQL an analyst types for it;
- `backfill`: what a model has not embedded yet, bulk COPY, stale rows;
- `erasures`: `vitrine forget` (delete by merchant or image, check, audit row);
- `quality`: listing-photo quality measurements, and the images that fail a rule;
- `reviews`: shoppers' review photos of a listing and their match with it;
- `corrections`: the review desk's latest decision per image, for `train --corrections`;
- `desk`: the review desk's pages (keyset), work queues and decisions.

Image life cycle::

    upsert_pending_images  -> pending
    claim_image            -> processing   (None if done or failed: nothing to do)
    save_results           -> done         (predictions + embeddings upserted)
    mark_pending           -> pending      (retryable error; optional last error kept)
    mark_failed            -> failed       (terminal; a re-upload resets it to pending)
    delete_images          -> (row gone)   (`vitrine forget`; a late save_results stores nothing)

A `done` row never goes back: re-uploading it, redelivering its task or a late
`mark_failed` from a duplicate worker leave it done.
"""

from __future__ import annotations

from db.repository.backfill import (
    copy_embeddings,
    images_missing_embeddings,
    iter_images_missing_embeddings,
    requeue_stale,
    stale_images,
)
from db.repository.bulk import (
    build_hnsw_index_concurrently,
    copy_catalog,
    drop_hnsw_index_concurrently,
)
from db.repository.clients import (
    api_client_for_token,
    create_api_client,
    image_detail,
    list_api_clients,
    revoke_api_client,
)
from db.repository.corrections import CorrectedImage, latest_corrections
from db.repository.desk import (
    browse,
    corrections_for,
    merchants,
    photo_source,
    queue_items,
    readable_views,
    record_correction,
)
from db.repository.erasures import (
    delete_images,
    delete_reviews,
    image_rows_left,
    record_erasure,
    referenced_uris,
)
from db.repository.images import (
    MAX_ERROR_CHARS,
    claim_image,
    claim_images,
    mark_failed,
    mark_pending,
    save_results,
    upsert_pending_images,
)
from db.repository.lookups import (
    image_summaries,
    known_results,
    label_counts,
    labels_for,
    status_counts,
    statuses,
)
from db.repository.models import (
    MODELS_LOCK_KEY,
    activate_model,
    active_model,
    drop_hnsw_index,
    ensure_hnsw_index,
    find_model,
    list_models,
    model_count,
    register_model,
)
from db.repository.quality import quality_issues, save_quality
from db.repository.reviews import (
    ListingMatch,
    ReviewRow,
    fail_review,
    listing_match,
    save_review,
    upsert_review,
)
from db.repository.search import similar, similar_raw_sql, similar_sql, similar_to_vector
from db.repository.timings import commit_times, database_clock, delete_merchants, settled_counts
from db.types import (
    ApiClient,
    ClaimedImage,
    EmbeddingRow,
    Erasure,
    ImageResult,
    ImageSummary,
    LabelInfo,
    ModelRow,
    Neighbour,
)

__all__ = [
    "ListingMatch",
    "ReviewRow",
    "fail_review",
    "listing_match",
    "save_review",
    "upsert_review",
    "MAX_ERROR_CHARS",
    "MODELS_LOCK_KEY",
    "ApiClient",
    "api_client_for_token",
    "create_api_client",
    "image_detail",
    "list_api_clients",
    "revoke_api_client",
    "ClaimedImage",
    "CorrectedImage",
    "latest_corrections",
    "browse",
    "corrections_for",
    "merchants",
    "photo_source",
    "queue_items",
    "readable_views",
    "record_correction",
    "EmbeddingRow",
    "Erasure",
    "delete_images",
    "delete_reviews",
    "image_rows_left",
    "record_erasure",
    "referenced_uris",
    "ImageResult",
    "ImageSummary",
    "LabelInfo",
    "ModelRow",
    "Neighbour",
    "activate_model",
    "build_hnsw_index_concurrently",
    "drop_hnsw_index_concurrently",
    "active_model",
    "claim_image",
    "claim_images",
    "commit_times",
    "database_clock",
    "delete_merchants",
    "copy_catalog",
    "copy_embeddings",
    "drop_hnsw_index",
    "ensure_hnsw_index",
    "find_model",
    "image_summaries",
    "images_missing_embeddings",
    "iter_images_missing_embeddings",
    "known_results",
    "label_counts",
    "labels_for",
    "list_models",
    "mark_failed",
    "mark_pending",
    "model_count",
    "register_model",
    "save_results",
    "settled_counts",
    "similar",
    "similar_raw_sql",
    "similar_sql",
    "similar_to_vector",
    "quality_issues",
    "save_quality",
    "requeue_stale",
    "stale_images",
    "status_counts",
    "statuses",
    "upsert_pending_images",
]
