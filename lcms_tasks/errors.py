"""LCMS exception hierarchy.

Every error names the object it is about (file, field, tile, class) so an ops
engineer can act on the message alone. Classes also inherit the matching
built-in so callers may catch ``ValueError`` or ``FileNotFoundError``.
"""

from __future__ import annotations


class LcmsError(Exception):
    """Base class of all LCMS errors.

    ``permanent``: retrying the same work cannot help (a bad config, a missing upstream, a corrupt
    file); orchestrators fail such tasks at once instead of retrying them.
    """

    permanent = False


class ConfigError(LcmsError, ValueError):
    """A project config (or a file it points to, or a run parameter) is invalid."""

    permanent = True

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        self.path = path
        self.field = field
        where = ": ".join(part for part in (path, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StorageError(LcmsError, OSError):
    """An artefact could not be read or written, or a URI is not allowed."""


class ArtefactMissingError(StorageError, FileNotFoundError):
    """An upstream artefact a stage needs is absent or incomplete."""


class UpstreamMissingError(ArtefactMissingError):
    """A stage's input was never produced: the message names the stage, season, tiles and the command to run."""

    permanent = True

    def __init__(self, message: str, *, stage: str, season: str, tiles: list[str] | None = None) -> None:
        self.stage = stage
        self.season = season
        self.tiles = tiles or []
        super().__init__(message)


class CorruptArtefactError(StorageError, ValueError):
    """An artefact exists and is marked complete, but a file in it cannot be read as what it claims to be."""

    permanent = True


class EmptyResultError(LcmsError):
    """A command ran but produced nothing useful (no polygon kept, none inside the AOI)."""


class StageError(LcmsError, RuntimeError):
    """A stage failed on a tile or on the whole run."""


class TileFailureError(StageError):
    """Some tiles of a batch failed; the others were written."""

    def __init__(self, stage: str, failures: dict[str, str], *, permanent: bool = False) -> None:
        self.stage = stage
        self.failures = failures
        self.permanent = permanent
        #: The line a CLI prints above the failed tiles.
        self.headline = f"stage {stage!r}: {len(failures)} tile(s) failed"
        lines = "; ".join(f"{tile}: {err}" for tile, err in sorted(failures.items()))
        super().__init__(f"stage {stage!r}: {len(failures)} tile(s) failed: {lines}")


class ChangeStoreError(LcmsError, RuntimeError):
    """The change store (PostgreSQL + PostGIS) cannot be reached, logged in to, migrated or loaded.

    The message names the database (host, port, name; never a password) and the fix. ``permanent``
    is set per error: a wrong password or a missing PostGIS stays wrong on retry, a lost connection
    may not.
    """

    def __init__(self, message: str, *, database: str | None = None, permanent: bool = False) -> None:
        self.database = database
        self.permanent = permanent
        super().__init__(message)
