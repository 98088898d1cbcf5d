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
- `failed`: failed uploads for the review desk, and sending passing failures again;
- `corrections`: the review desk's latest decision per image, for `train --corrections`;
- `desk`: the review desk's pages (keyset), work queues, counts and label decisions;
- `pairs`: the desk's pairs (near-duplicates, review photos), their verdicts, and undo.

Image life cycle::

    record_uploads         -> pending      (one row per upload event; the same event again
                                            finds its row: `Recorded.created` False)
    claim_images           -> processing   (absent if done or failed: nothing to do)
    save_results           -> done         (predictions + embeddings upserted)
    (transient error)      -> processing   (claimable again by the retry or redelivery;
                                            `requeue_stale` sends work left too long)
    mark_failed            -> failed       (terminal; a re-upload resets it to pending,
                                            as `reset_failed` does one that gave up on
                                            passing trouble)
    delete_images          -> (row gone)   (`vitrine forget`; a late save_results stores nothing)

A `done` row never goes back: redelivering its event or its task, or a late `mark_failed`
from a duplicate worker, leave it done. Another upload of the same photo is another event,
hence another row (migration 0013).
"""

from __future__ import annotations

from vitrine.db.repository.backfill import (
    copy_embeddings,
    images_missing_embeddings,
    images_without_hash,
    iter_images_missing_embeddings,
    requeue_stale,
    save_hashes,
    stale_images,
    unhashed_count,
)
from vitrine.db.repository.bulk import (
    build_hnsw_index_concurrently,
    copy_catalog,
    drop_hnsw_index_concurrently,
)
from vitrine.db.repository.clients import (
    api_client_for_token,
    create_api_client,
    create_desk_session,
    desk_session_client,
    end_desk_session,
    image_detail,
    list_api_clients,
    revoke_api_client,
    rotate_api_client,
)
from vitrine.db.repository.corrections import CorrectedImage, latest_corrections
from vitrine.db.repository.desk import (
    PAIR_QUEUES,
    browse,
    browse_count,
    corrections_for,
    merchants,
    photo_source,
    queue_count,
    queue_items,
    readable_views,
    record_correction,
)
from vitrine.db.repository.erasures import (
    delete_images,
    delete_reviews,
    image_rows_left,
    record_erasure,
    referenced_uris,
)
from vitrine.db.repository.failed import (
    FailedCount,
    ResetUpload,
    failed_count,
    failed_uploads,
    resendable,
    reset_failed,
)
from vitrine.db.repository.images import (
    MAX_ERROR_CHARS,
    Recorded,
    claim_images,
    mark_failed,
    new_event_id,
    record_uploads,
    save_results,
    upsert_pending_images,
)
from vitrine.db.repository.lookups import (
    image_summaries,
    known_results,
    label_counts,
    labels_for,
    status_counts,
    statuses,
)
from vitrine.db.repository.models import (
    MODELS_LOCK_KEY,
    activate_model,
    active_labels,
    active_model,
    drop_hnsw_index,
    ensure_hnsw_index,
    find_model,
    list_models,
    model_count,
    register_model,
)
from vitrine.db.repository.pairs import (
    DUPLICATE_DECISIONS,
    REVIEW_DECISIONS,
    LastAction,
    delisted,
    drop_duplicates,
    duplicate_pairs,
    last_action,
    new_action,
    pair_count,
    pair_history,
    photos,
    record_duplicates,
    record_pair_decision,
    review_listing,
    review_pairs,
    review_source,
    undo_last,
)
from vitrine.db.repository.quality import quality_issues, save_quality
from vitrine.db.repository.reviews import (
    ListingMatch,
    ReviewRow,
    fail_review,
    listing_match,
    save_review,
    upsert_review,
)
from vitrine.db.repository.search import similar, similar_sql, similar_to_vector
from vitrine.db.repository.timings import (
    commit_times,
    database_clock,
    delete_merchants,
    settled_counts,
)
from vitrine.db.types import (
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
    "active_labels",
    "FailedCount",
    "ResetUpload",
    "failed_count",
    "failed_uploads",
    "reset_failed",
    "resendable",
    "PAIR_QUEUES",
    "browse_count",
    "queue_count",
    "DUPLICATE_DECISIONS",
    "REVIEW_DECISIONS",
    "LastAction",
    "delisted",
    "duplicate_pairs",
    "last_action",
    "new_action",
    "pair_count",
    "pair_history",
    "photos",
    "record_pair_decision",
    "review_listing",
    "review_pairs",
    "review_source",
    "undo_last",
    "record_duplicates",
    "drop_duplicates",
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
    "create_desk_session",
    "desk_session_client",
    "end_desk_session",
    "image_detail",
    "list_api_clients",
    "revoke_api_client",
    "rotate_api_client",
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
    "model_count",
    "register_model",
    "save_results",
    "settled_counts",
    "similar",
    "similar_sql",
    "similar_to_vector",
    "quality_issues",
    "save_quality",
    "requeue_stale",
    "stale_images",
    "status_counts",
    "statuses",
    "upsert_pending_images",
    "images_without_hash",
    "save_hashes",
    "unhashed_count",
    "Recorded",
    "new_event_id",
    "record_uploads",
]
