"""Users and sessions of the operator application: ``lcms.users`` (argon2 password hashes, roles), ``lcms.sessions``.

A session is stored by the SHA-256 of its cookie's random token, never the token itself: reading the
table does not let anyone log in. Deleting a user deletes their sessions; decisions name their author by
``decided_by`` (text), so they outlive the user.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLES = ("viewer", "validator", "admin")

SCHEMA_SQL = f"""
CREATE TABLE lcms.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_name_key UNIQUE (name),
    CONSTRAINT users_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{{0,63}}$'),
    CONSTRAINT users_role_check CHECK (role IN ({", ".join(f"'{r}'" for r in ROLES)})),
    CONSTRAINT users_password_hash_check CHECK (password_hash LIKE '$argon2%')
);
COMMENT ON TABLE lcms.users IS 'operators of the LCMS application; managed with `lcms users`';
COMMENT ON COLUMN lcms.users.password_hash IS 'argon2 (PHC string: algorithm, parameters, salt, hash)';
COMMENT ON COLUMN lcms.users.role IS 'viewer < validator < admin: each role may do what the lower ones may';
-- 'Ana' and 'ana' are one user: logins match the name case-insensitively
CREATE UNIQUE INDEX users_name_lower_key ON lcms.users (lower(name));

CREATE TABLE lcms.sessions (
    token_hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES lcms.users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_token_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_expiry_check CHECK (expires_at > created_at)
);
COMMENT ON TABLE lcms.sessions IS 'login sessions of the operator application';
COMMENT ON COLUMN lcms.sessions.token_hash IS 'SHA-256 of the cookie''s random token (never stored itself)';
COMMENT ON COLUMN lcms.sessions.csrf_token IS 'the X-CSRF-Token header every state-changing request must send';
COMMENT ON COLUMN lcms.sessions.last_seen IS 'last request (noted once a minute at most): the idle timeout';
CREATE INDEX sessions_user_idx ON lcms.sessions (user_id);
CREATE INDEX sessions_expires_idx ON lcms.sessions (expires_at);
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS lcms.sessions, lcms.users")
