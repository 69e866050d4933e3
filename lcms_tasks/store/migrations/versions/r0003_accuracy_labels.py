"""Reference labels of accuracy sample points, given in the operator application's blind assessment mode.

``lcms.accuracy_labels`` holds one row per point of a season's sample design per labeller (its
current label: a class of the legend, or "cannot tell" with a comment); a re-label updates that row
(``version = version + 1``) and every version is appended to ``lcms.accuracy_label_history``, which its
triggers keep append-only (like ``lcms.decisions``). A design is named by ``design_id`` (the SHA-256
of its design.json and points.csv), so the labels of a redrawn design never mix with the old one's.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA_SQL = """
CREATE TABLE lcms.accuracy_labels (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    season text NOT NULL,
    design_id text NOT NULL,
    point_id text NOT NULL,
    labelled_by text NOT NULL,
    reference_class integer,
    reference_name text,
    cannot_tell boolean NOT NULL DEFAULT false,
    comment text,
    version integer NOT NULL DEFAULT 1,
    first_labelled_at timestamptz NOT NULL DEFAULT now(),
    labelled_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accuracy_labels_one_per_labeller UNIQUE (project, season, design_id, point_id, labelled_by),
    CONSTRAINT accuracy_labels_reference_check CHECK (
        (cannot_tell AND reference_class IS NULL AND reference_name IS NULL)
        OR (NOT cannot_tell AND reference_class IS NOT NULL AND reference_name IS NOT NULL)
    ),
    CONSTRAINT accuracy_labels_version_check CHECK (version >= 1)
);
COMMENT ON TABLE lcms.accuracy_labels IS
    'reference labels of accuracy sample points (blind assessment): one row per point per labeller, its current label';
COMMENT ON COLUMN lcms.accuracy_labels.design_id IS 'SHA-256 (hex) of the design''s design.json and points.csv';
COMMENT ON COLUMN lcms.accuracy_labels.reference_class IS 'class id of the legend; NULL when the labeller cannot tell';
CREATE INDEX accuracy_labels_design_idx ON lcms.accuracy_labels (project, season, design_id);

CREATE TABLE lcms.accuracy_label_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label_id bigint NOT NULL REFERENCES lcms.accuracy_labels (id),
    version integer NOT NULL,
    labelled_by text NOT NULL,
    labelled_at timestamptz NOT NULL DEFAULT now(),
    reference_class integer,
    reference_name text,
    cannot_tell boolean NOT NULL,
    comment text,
    CONSTRAINT accuracy_label_history_version_key UNIQUE (label_id, version)
);
COMMENT ON TABLE lcms.accuracy_label_history IS
    'every version of every accuracy label: append-only (UPDATE, DELETE, TRUNCATE refused)';

CREATE FUNCTION lcms.refuse_label_history_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lcms.accuracy_label_history is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER accuracy_label_history_append_only BEFORE UPDATE OR DELETE ON lcms.accuracy_label_history
    FOR EACH ROW EXECUTE FUNCTION lcms.refuse_label_history_edit();
CREATE TRIGGER accuracy_label_history_no_truncate BEFORE TRUNCATE ON lcms.accuracy_label_history
    FOR EACH STATEMENT EXECUTE FUNCTION lcms.refuse_label_history_edit();
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS lcms.accuracy_label_history, lcms.accuracy_labels;"
        "DROP FUNCTION IF EXISTS lcms.refuse_label_history_edit();"
    )
