"""Parcel checks in the Validation Tool's queue: ``lcms.changes`` rows of kind ``parcel_check``.

A parcel check is a declared parcel whose predicted crop differs from the declared one with high
confidence (the reporting stage's parcel markers). It goes through the same queue, decisions and
audit trail as a detected change, with its own meaning:

* ``kind`` — ``change`` (a land cover change between two seasons; every row before this revision) or
  ``parcel_check``;
* ``product`` — the map product whose legend the classes are of (NULL: the primary product);
* ``parcel_id`` — the declaration's parcel id.

For a parcel check the season pair is the declaration's season twice, ``from_class`` the declared
crop and ``to_class`` the predicted one, ``confidence`` the predicted crop's probability. A change
load (which works on season pairs of two different seasons) never touches a parcel check.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KINDS = ("change", "parcel_check")

# ADD COLUMN with a constant default is a catalogue change in PostgreSQL 11+: no table rewrite.
SCHEMA_SQL = """
ALTER TABLE lcms.changes
    ADD COLUMN kind text NOT NULL DEFAULT 'change',
    ADD COLUMN product text,
    ADD COLUMN parcel_id text;
ALTER TABLE lcms.changes
    ADD CONSTRAINT changes_kind_check CHECK (kind IN ('change', 'parcel_check')),
    ADD CONSTRAINT changes_parcel_check_shape CHECK (
        kind = 'change'
        OR (parcel_id IS NOT NULL AND product IS NOT NULL AND season_before = season_after)
    ),
    ADD CONSTRAINT changes_change_shape CHECK (kind = 'parcel_check' OR parcel_id IS NULL);
COMMENT ON COLUMN lcms.changes.kind IS
    'change: a land cover change between two seasons; parcel_check: a declared parcel whose predicted crop '
    'differs from the declared one (from_class declared, to_class predicted, one season)';
COMMENT ON COLUMN lcms.changes.product IS 'map product whose legend the classes are of (NULL: the primary product)';
COMMENT ON COLUMN lcms.changes.parcel_id IS 'parcel checks: the declaration''s parcel id';
CREATE INDEX changes_parcel_checks_idx ON lcms.changes (project, product, season_after, status)
    WHERE kind = 'parcel_check';
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)


def downgrade() -> None:
    # Without its columns a parcel check would read as a change (and decided rows and the audit trail are
    # never deleted): refuse while there are any.
    op.execute(
        """DO $$
        DECLARE n bigint;
        BEGIN
            SELECT count(*) INTO n FROM lcms.changes WHERE kind = 'parcel_check';
            IF n > 0 THEN
                RAISE EXCEPTION 'lcms.changes holds % parcel checks: revision 0003 cannot represent them', n
                    USING ERRCODE = 'object_in_use';
            END IF;
        END $$;"""
    )
    op.execute(
        "DROP INDEX IF EXISTS lcms.changes_parcel_checks_idx;"
        "ALTER TABLE lcms.changes DROP CONSTRAINT IF EXISTS changes_change_shape,"
        " DROP CONSTRAINT IF EXISTS changes_parcel_check_shape, DROP CONSTRAINT IF EXISTS changes_kind_check;"
        "ALTER TABLE lcms.changes DROP COLUMN IF EXISTS parcel_id, DROP COLUMN IF EXISTS product,"
        " DROP COLUMN IF EXISTS kind;"
    )
