"""Users of the operator application: roles, names, password rules, argon2 hashes, and ``lcms users``.

Roles are ordered, each including the ones below it: ``viewer`` (reads maps and changes) <
``validator`` (decides changes) < ``admin`` (users and settings); :func:`role_rank` compares them.

Passwords are hashed with argon2id (argon2-cffi's RFC 9106 low-memory profile: 64 MiB, 3 passes, a
random salt per hash) and only the hash is stored, in ``lcms.users`` (migration ``0002``). No function
here logs, returns or puts into an error message a password or a hash; :class:`UserRecord` has no hash.

The functions taking a ``url`` manage the users of the change store at that URL (psycopg2, one short
transaction each) and raise :class:`UserError` (a ``ValueError``: the CLI's exit status 2) for a
name, role or password that is not acceptable, an unknown user or an existing one.
:func:`read_new_password` is how ``lcms users add`` asks for a password: prompted twice on a
terminal, one line of standard input otherwise (``echo "$PW" | lcms users add ana --role viewer``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, get_args

from lcms_tasks.errors import LcmsError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

Role = Literal["viewer", "validator", "admin"]
#: The roles, lowest first: each may do what the ones before it may.
ROLES: tuple[Role, ...] = get_args(Role)
MIN_PASSWORD_LENGTH = 8
#: Longer inputs are refused before hashing (argon2 would take them, but nobody types 1 KiB).
MAX_PASSWORD_LENGTH = 1024
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class UserError(LcmsError, ValueError):
    """A user name, role or password is not acceptable, or the user does (not) exist; names the user, never a secret."""

    permanent = True


@dataclass(frozen=True)
class UserRecord:
    """One row of ``lcms.users``, without its password hash."""

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
        }


# ---------------------------------------------------------------------------------------- checks
def role_rank(role: str) -> int:
    """0 for viewer, 1 for validator, 2 for admin."""
    return ROLES.index(check_role(role))


def check_role(role: str) -> Role:
    """``role`` if it is one of :data:`ROLES`, else :class:`UserError`."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    """``name`` if it is a valid user name (1-64 letters, digits, ``_ . @ -``, starting with a letter or digit)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(
            f"user name {name!r} is not allowed: 1 to 64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or a digit"
        )
    return name


def check_password(password: str, *, name: str | None = None) -> None:
    """:class:`UserError` for a password that is empty, too short or long, or the user's name (never echoed)."""
    if not password:
        raise UserError("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise UserError("the password is only white space")
    if name is not None and password.casefold() == name.casefold():
        raise UserError(f"the password of {name!r} may not be the user name")


# -------------------------------------------------------------------------------------- hashing
_hasher: PasswordHasher | None = None
_dummy_hash: str | None = None
_hasher_lock = threading.Lock()


def password_hasher() -> PasswordHasher:
    """The process's argon2id hasher (RFC 9106 low-memory profile)."""
    global _hasher
    with _hasher_lock:
        if _hasher is None:
            from argon2 import PasswordHasher, profiles

            _hasher = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
        return _hasher


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string ``$argon2id$v=19$m=...``) of ``password``, with a fresh random salt."""
    return password_hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (False, not an error, for a malformed hash)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether ``password_hash`` was made with other parameters than :func:`password_hasher`'s (rehash on login)."""
    from argon2.exceptions import InvalidHashError

    try:
        return password_hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def verify_nothing(password: str) -> bool:
    """Spend the time :func:`verify_password` takes, against a hash nobody knows the password of; always False.

    A login for a user that does not exist calls this, so it answers as slowly as a wrong password.
    """
    global _dummy_hash
    hasher = password_hasher()
    with _hasher_lock:
        if _dummy_hash is None:
            _dummy_hash = hasher.hash(secrets.token_urlsafe(24))
        dummy = _dummy_hash
    verify_password(dummy, password)
    return False


def read_new_password(
    name: str,
    *,
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """A new password for ``name``: prompted twice when standard input is a terminal, else its first line.

    The line's end (``\\n`` or ``\\r\\n``) is not part of the password; other white space is. The password
    is checked (:func:`check_password`) before it is returned.
    """
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        password = prompt(f"Password for {name}: ")
        check_password(password, name=name)
        if prompt(f"Repeat the password for {name}: ") != password:
            raise UserError(f"the two passwords typed for {name!r} differ; nothing was changed")
    else:
        password = stream.readline().removesuffix("\n").removesuffix("\r")
        check_password(password, name=name)
    return password


# ------------------------------------------------------------------------------------ the table
_COLUMNS = "id, name, role, disabled, created_at"


def _record(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(
        id=int(row[0]), name=str(row[1]), role=check_role(row[2]), disabled=bool(row[3]), created_at=row[4]
    )


def _run(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` in one transaction on the store at ``url``; its rows (``RETURNING``/``SELECT``)."""
    import psycopg2

    from lcms_tasks.store.db import connect, describe

    conn = connect(url, application_name="lcms-users")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
    except psycopg2.errors.UndefinedTable as err:
        raise UserError(
            f"{describe(url)} has no users table (the change store schema is older than revision 0002). "
            "Fix: run `lcms db upgrade` (with --config for a configured database)"
        ) from err
    finally:
        conn.close()


def _one(url: str, name: str, sql: str, args: tuple[Any, ...]) -> UserRecord:
    rows = _run(url, sql, args)
    if not rows:
        raise UserError(f"no user named {name!r} (`lcms users list` shows them)")
    return _record(rows[0])


def add_user(url: str, name: str, role: str, password: str) -> UserRecord:
    """Create user ``name`` with ``role`` and (the hash of) ``password``; :class:`UserError` if the name is taken."""
    import psycopg2

    check_name(name)
    role = check_role(role)
    check_password(password, name=name)
    password_hash = hash_password(password)
    try:
        rows = _run(
            url,
            f"INSERT INTO lcms.users (name, password_hash, role) VALUES (%s, %s, %s) RETURNING {_COLUMNS}",
            (name, password_hash, role),
        )
    except psycopg2.errors.UniqueViolation as err:
        raise UserError(f"a user named {name!r} exists already (names are case-insensitive)") from err
    return _record(rows[0])


def get_user(url: str, name: str) -> UserRecord:
    """The user called ``name`` (case-insensitive); :class:`UserError` if there is none."""
    return _one(url, name, f"SELECT {_COLUMNS} FROM lcms.users WHERE lower(name) = lower(%s)", (name,))


def list_users(url: str) -> list[UserRecord]:
    """Every user, by name."""
    return [_record(row) for row in _run(url, f"SELECT {_COLUMNS} FROM lcms.users ORDER BY lower(name)")]


def set_role(url: str, name: str, role: str) -> UserRecord:
    """Give user ``name`` the role ``role`` (their open sessions have it from their next request)."""
    role = check_role(role)
    return _one(
        url, name, f"UPDATE lcms.users SET role = %s WHERE lower(name) = lower(%s) RETURNING {_COLUMNS}", (role, name)
    )


def disable_user(url: str, name: str) -> UserRecord:
    """Stop user ``name`` from logging in, and end their open sessions."""
    return _one(
        url,
        name,
        "WITH u AS (UPDATE lcms.users SET disabled = true WHERE lower(name) = lower(%s) RETURNING "
        f"{_COLUMNS}), gone AS (DELETE FROM lcms.sessions WHERE user_id IN (SELECT id FROM u)) SELECT * FROM u",
        (name,),
    )


def enable_user(url: str, name: str) -> UserRecord:
    """Let a disabled user ``name`` log in again."""
    return _one(
        url, name, f"UPDATE lcms.users SET disabled = false WHERE lower(name) = lower(%s) RETURNING {_COLUMNS}", (name,)
    )


def set_password(url: str, name: str, password: str) -> UserRecord:
    """Replace the password of user ``name``, and end their open sessions."""
    check_password(password, name=get_user(url, name).name)
    return _one(
        url,
        name,
        "WITH u AS (UPDATE lcms.users SET password_hash = %s WHERE lower(name) = lower(%s) RETURNING "
        f"{_COLUMNS}), gone AS (DELETE FROM lcms.sessions WHERE user_id IN (SELECT id FROM u)) SELECT * FROM u",
        (hash_password(password), name),
    )


def _password_matches(url: str, name: str, password: str) -> bool:
    """Whether user ``name`` exists, is enabled and has ``password`` (the hash never leaves this function)."""
    rows = _run(url, "SELECT password_hash FROM lcms.users WHERE lower(name) = lower(%s) AND NOT disabled", (name,))
    return bool(rows) and verify_password(str(rows[0][0]), password)


def ensure_generated_user(url: str, name: str, role: str, secrets_file: Path) -> tuple[UserRecord, bool]:
    """A user ``name`` who can log in with the password recorded in ``secrets_file``; (the user, whether it changed).

    What ``make demo`` does so that its operator application can be opened at once: ``secrets_file`` is a
    JSON object ``{name: password}`` readable by its owner only (mode 0600, written under a temporary
    name then renamed). When the user exists, is enabled and still has the recorded password nothing
    changes; otherwise a new random password is generated, recorded, and given to the user (created
    with ``role`` if absent; an existing user keeps their role and is enabled). Nobody is shown the
    password: the caller prints the file's path.
    """
    import json
    import os

    recorded: dict[str, str] = {}
    if secrets_file.exists():
        try:
            loaded = json.loads(secrets_file.read_text())
        except ValueError:
            loaded = {}  # unreadable: regenerated below
        recorded = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    password = recorded.get(name)
    if password is not None and _password_matches(url, name, password):
        return get_user(url, name), False
    password = secrets.token_urlsafe(18)
    recorded[name] = password
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = secrets_file.with_name(f".{secrets_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(recorded, fh, indent=1)
    try:
        try:
            user = add_user(url, name, role, password)
        except UserError:  # exists: a new password, enabled again
            set_password(url, name, password)
            user = enable_user(url, name)
        os.replace(tmp, secrets_file)
    finally:
        tmp.unlink(missing_ok=True)
    return user, True
