"""Listing-photo quality: measurements per image, and a view of the images that fail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

- `image_quality`: one row per image, what `vitrine.pipeline.inference.quality` measured on the
pixels the
  worker decoded (model-independent), written in the transaction that stores the results.
  Object figures are NULL where the backdrop is not plain (no object to speak of).
- `quality_issues`: the images that fail a main-image rule, with every reason (codes and
  human text). Thresholds are read when the view is queried, from the settings
  `vitrine.quality_*` (custom GUCs), defaulting to `DEFAULTS` below, which
  tests/unit/test_quality.py keeps equal to `vitrine.pipeline.inference.quality.QualityRules`.
  Change one for
  every session with `ALTER DATABASE vitrine SET vitrine.quality_min_side = '1600'`, or for
  one session with `SET vitrine.quality_min_side = '1600'` (docs/sql.md).
- Grants as 0002 decided them: the worker writes (insert, update of the measurements), the
  analyst reads, a merchant reads its own images' rows through a policy, and the view is
  security_invoker where PostgreSQL >= 15 allows it (merchants may read it only there).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"

#: Threshold defaults of `quality_issues`, as SQL literals (setting vitrine.quality_<name>).
DEFAULTS: dict[str, tuple[str, str]] = {
    "min_side": ("integer", "1000"),
    "min_white_share": ("real", "0.9"),
    "min_span": ("real", "0.5"),
    "min_sharpness": ("real", "8.5"),
    "min_highlight": ("real", "155.0"),
    "max_object_luminance": ("real", "245.0"),
}
MEASURES = (
    "longest_side_px, white_background_share, fill_ratio, object_span, touches_border, "
    "sharpness, highlight_luminance, object_luminance"
)

CREATE = """
CREATE TABLE image_quality (
    image_id bigint NOT NULL,
    longest_side_px integer NOT NULL,
    white_background_share real NOT NULL,
    fill_ratio real,
    object_span real,
    touches_border boolean,
    sharpness real NOT NULL,
    highlight_luminance real NOT NULL,
    object_luminance real,
    measured_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT image_quality_pkey PRIMARY KEY (image_id),
    CONSTRAINT image_quality_image_id_fkey FOREIGN KEY (image_id)
        REFERENCES images (id) ON DELETE CASCADE
)
"""

_SETTING = (
    "coalesce(nullif(current_setting('vitrine.quality_{name}', true), ''), '{value}')::{type}"
)
_THRESHOLDS = ",\n           ".join(
    f"{_SETTING.format(name=name, value=value, type=type_)} AS {name}"
    for name, (type_, value) in DEFAULTS.items()
)

VIEW = f"""
CREATE VIEW quality_issues AS
SELECT i.id AS image_id, i.merchant_id, i.sku, i.uri, r.reasons, r.details,
       q.longest_side_px, q.white_background_share, q.fill_ratio, q.object_span,
       q.touches_border, q.sharpness, q.highlight_luminance, q.object_luminance,
       q.measured_at
  FROM image_quality q
  JOIN images i ON i.id = q.image_id
 CROSS JOIN (SELECT {_THRESHOLDS}) AS t
 CROSS JOIN LATERAL (
    SELECT array_agg(c.code ORDER BY c.n) AS reasons,
           string_agg(c.detail, '; ' ORDER BY c.n) AS details
      FROM (VALUES
        (1, 'small_image', q.longest_side_px < t.min_side,
            format('longest side %s px, under %s', q.longest_side_px, t.min_side)),
        (2, 'background_not_white', q.white_background_share < t.min_white_share,
            format('background not white (%s%% of the border near white, under %s%%)',
                   round(100 * q.white_background_share), round(100 * t.min_white_share))),
        (3, 'product_too_small', q.object_span < t.min_span,
            format('product spans %s%% of the frame, under %s%%',
                   round(100 * q.object_span), round(100 * t.min_span))),
        (4, 'product_cut_off', q.touches_border,
            'product cut off at the frame''s edge'),
        (5, 'blurry', q.sharpness < t.min_sharpness,
            format('blurred (sharpness %s, under %s)', round(q.sharpness), t.min_sharpness)),
        (6, 'too_dark', q.highlight_luminance < t.min_highlight,
            format('too dark (brightest 1%% at %s of 255, under %s)',
                   round(q.highlight_luminance), t.min_highlight)),
        (7, 'too_bright', q.object_luminance > t.max_object_luminance,
            format('product washed out (mean luminance %s of 255, over %s)',
                   round(q.object_luminance), t.max_object_luminance))
      ) AS c(n, code, failed, detail)
     WHERE c.failed
 ) AS r
 WHERE r.reasons IS NOT NULL
"""

_IN_SCOPE = (
    "EXISTS (SELECT 1 FROM images i WHERE i.id = image_quality.image_id "
    "AND i.merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[]))"
)
POLICIES = [
    ("worker", f"FOR ALL TO {WORKER} USING (true) WITH CHECK (true)"),
    ("analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
    ("merchant", f"FOR SELECT TO {MERCHANT} USING ({_IN_SCOPE})"),
]
GRANTS = [
    f"SELECT ON image_quality, quality_issues TO {WORKER}, {ANALYST}",
    f"SELECT ON image_quality TO {MERCHANT}",
    f"INSERT ON image_quality TO {WORKER}",
    f"UPDATE ({MEASURES}, measured_at) ON image_quality TO {WORKER}",
]
MERCHANT_VIEW = f"""
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'ALTER VIEW quality_issues SET (security_invoker = true)';
        EXECUTE 'GRANT SELECT ON quality_issues TO {MERCHANT}';
    ELSE
        RAISE NOTICE 'PostgreSQL < 15: vitrine_merchant may not read quality_issues';
    END IF;
END
$do$
"""
COMMENTS = [
    "COMMENT ON TABLE image_quality IS 'Listing-photo quality measured per image "
    "(pipeline/quality.py); object figures NULL where the backdrop is not plain.'",
    "COMMENT ON VIEW quality_issues IS 'Images failing a main-image rule, every reason; "
    "thresholds from settings vitrine.quality_* (docs/sql.md).'",
]


def upgrade() -> None:
    op.execute(CREATE)
    op.execute(VIEW)
    for grant in GRANTS:
        op.execute(f"GRANT {grant}")
    op.execute("ALTER TABLE image_quality ENABLE ROW LEVEL SECURITY")
    for who, clause in POLICIES:
        op.execute(f"CREATE POLICY image_quality_{who} ON image_quality {clause}")
    op.execute(MERCHANT_VIEW)
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW quality_issues")
    op.execute("DROP TABLE image_quality")  # its grants and policies go with it
