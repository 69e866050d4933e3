"""Initial change store schema: changes, decisions (append-only), detection links, loads.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from alembic import op

from lcms_tasks.store.db import ensure_postgis

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("detected", "confirmed", "rejected", "corrected")
ACTIONS = ("confirm", "reject", "correct", "reopen", "comment")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SCHEMA_SQL = f"""
CREATE TABLE lcms.changes (
    id uuid PRIMARY KEY,
    project text NOT NULL,
    season_before text NOT NULL,
    season_after text NOT NULL,
    from_class integer NOT NULL,
    from_name text NOT NULL,
    to_class integer NOT NULL,
    to_name text NOT NULL,
    area_m2 double precision NOT NULL CHECK (area_m2 > 0),
    confidence double precision CHECK (confidence >= 0 AND confidence <= 1),
    geom geometry(MultiPolygon, 4326) NOT NULL,
    tiles text[] NOT NULL DEFAULT '{{}}',
    run_id text NOT NULL,
    model_run_ids text[] NOT NULL DEFAULT '{{}}',
    status text NOT NULL DEFAULT 'detected',
    corrected_from_class integer,
    corrected_to_class integer,
    corrected_geom geometry(MultiPolygon, 4326),
    version integer NOT NULL DEFAULT 1,
    datetime timestamptz NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT changes_status_check CHECK (status IN ({_in(STATUSES)})),
    CONSTRAINT changes_corrected_geom_valid CHECK (
        corrected_geom IS NULL OR (ST_IsValid(corrected_geom) AND NOT ST_IsEmpty(corrected_geom))
    ),
    CONSTRAINT changes_version_positive CHECK (version >= 1)
);
COMMENT ON TABLE lcms.changes IS
    'LCMS change polygons, one per change (dissolved across tile edges); decided ones survive re-loads';
COMMENT ON COLUMN lcms.changes.id IS
    'stable id: uuid5 of project, seasons, transition and the polygon in its UTM zone';
COMMENT ON COLUMN lcms.changes.geom IS
    'valid (the loader repairs or rejects invalid polygons; no CHECK: it would cost a tenth of a bulk load)';
COMMENT ON COLUMN lcms.changes.area_m2 IS 'area in the UTM zone of the tiles, before reprojection to EPSG:4326';
COMMENT ON COLUMN lcms.changes.datetime IS 'start of the after season (the OGC API datetime)';
COMMENT ON COLUMN lcms.changes.version IS
    'optimistic locking: UPDATE ... SET version = version + 1 WHERE id = $id AND version = $seen';
CREATE INDEX changes_geom_gist ON lcms.changes USING gist (geom);
CREATE INDEX changes_project_seasons_idx ON lcms.changes (project, season_before, season_after, status);
-- partial: decided changes are few and filtered for; 'detected' rows (bulk-loaded) stay out of it
CREATE INDEX changes_decided_idx ON lcms.changes (status) WHERE status <> 'detected';
CREATE INDEX changes_datetime_idx ON lcms.changes (datetime);

CREATE FUNCTION lcms.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER changes_touch_updated_at BEFORE UPDATE ON lcms.changes
    FOR EACH ROW EXECUTE FUNCTION lcms.touch_updated_at();

CREATE FUNCTION lcms.keep_decided_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'detected' THEN
        RAISE EXCEPTION 'lcms.changes %: a % change is never deleted (decided by an operator)', OLD.id, OLD.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;
-- WHEN: undecided rows (the bulk of a re-load) are deleted without calling the function
CREATE TRIGGER changes_keep_decided BEFORE DELETE ON lcms.changes
    FOR EACH ROW WHEN (OLD.status <> 'detected') EXECUTE FUNCTION lcms.keep_decided_changes();

CREATE TABLE lcms.decisions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_id uuid NOT NULL REFERENCES lcms.changes (id),
    decided_by text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    action text NOT NULL,
    previous jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    new jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    comment text,
    CONSTRAINT decisions_action_check CHECK (action IN ({_in(ACTIONS)}))
);
COMMENT ON TABLE lcms.decisions IS 'operator decisions on changes: append-only (UPDATE, DELETE, TRUNCATE refused)';
CREATE INDEX decisions_change_idx ON lcms.decisions (change_id, decided_at);

CREATE FUNCTION lcms.refuse_decision_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lcms.decisions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON lcms.decisions
    FOR EACH ROW EXECUTE FUNCTION lcms.refuse_decision_edit();
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON lcms.decisions
    FOR EACH STATEMENT EXECUTE FUNCTION lcms.refuse_decision_edit();

CREATE TABLE lcms.detection_links (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_id uuid NOT NULL REFERENCES lcms.changes (id),
    detection_id uuid NOT NULL,
    run_id text NOT NULL,
    project text NOT NULL,
    season_before text NOT NULL,
    season_after text NOT NULL,
    from_class integer NOT NULL,
    from_name text NOT NULL,
    to_class integer NOT NULL,
    to_name text NOT NULL,
    geom geometry(MultiPolygon, 4326) NOT NULL,
    area_m2 double precision NOT NULL,
    confidence double precision,
    overlap_m2 double precision,
    tiles text[] NOT NULL DEFAULT '{{}}',
    linked_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT detection_links_once UNIQUE (change_id, detection_id, run_id)
);
COMMENT ON TABLE lcms.detection_links IS
    'later detections overlapping a decided change: recorded here instead of duplicating the change';
COMMENT ON COLUMN lcms.detection_links.detection_id IS 'the id the detection would have had as a change';

CREATE TABLE lcms.loads (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    season_before text NOT NULL,
    season_after text NOT NULL,
    run_id text NOT NULL,
    source_run_ids text[] NOT NULL DEFAULT '{{}}',
    tiles text[] NOT NULL DEFAULT '{{}}',
    n_read integer NOT NULL,
    n_merged integer NOT NULL,
    n_inserted integer NOT NULL,
    n_replaced integer NOT NULL,
    n_linked integer NOT NULL,
    n_kept integer NOT NULL,
    n_fixed integer NOT NULL,
    n_rejected integer NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE lcms.loads IS 'one row per committed load of a season pair into lcms.changes';
CREATE INDEX loads_project_seasons_idx ON lcms.loads (project, season_before, season_after, finished_at);
"""


def upgrade() -> None:
    # Before any table: the geometry type must exist; a clear error if the role cannot create it.
    ensure_postgis(op.get_bind())
    op.execute(SCHEMA_SQL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS lcms.loads, lcms.detection_links, lcms.decisions, lcms.changes;"
        "DROP FUNCTION IF EXISTS lcms.refuse_decision_edit(), lcms.keep_decided_changes(), lcms.touch_updated_at();"
    )
