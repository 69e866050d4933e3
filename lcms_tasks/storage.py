"""One storage module for every artefact: URIs, layout and atomic writes.

Artefacts live under one root URI, ``file:///path`` or ``s3://bucket/prefix``.
Paths derive from (project, season, stage, tile); nothing is written outside
the root. A tile's output is a folder that is either complete or absent:

* local disk: written into a hidden sibling staging folder, a completion
  marker (``_COMPLETE.json``) written last, then renamed into place;
* S3: staged locally, uploaded object by object, the marker uploaded last
  (the previous marker is deleted before anything else is replaced).

Readers treat a folder without its marker as absent, so a crash mid-write
never leaves something a later stage would read as valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lcms_tasks.errors import ArtefactMissingError, StorageError

MARKER = "_COMPLETE.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_part(part: str) -> str:
    if not part or part in {".", ".."} or "/" in part or "\\" in part or part.startswith("."):
        raise StorageError(f"invalid storage path component {part!r}: must be a plain, non-hidden name")
    return part


class Storage:
    """Artefacts under one root URI (``file://`` or ``s3://``)."""

    def __init__(self, root_uri: str, *, s3_endpoint_url: str | None = None, compress_arrays: bool = False) -> None:
        parsed = urlparse(root_uri)
        if parsed.scheme not in {"file", "s3"}:
            raise StorageError(f"unsupported storage root {root_uri!r}: use file:///path or s3://bucket/prefix")
        self.scheme = parsed.scheme
        self.root = root_uri.rstrip("/")
        self.compress_arrays = compress_arrays
        self._s3_endpoint_url = s3_endpoint_url or os.environ.get("LCMS_S3_ENDPOINT_URL") or None
        self._s3_client: Any = None
        if self.scheme == "s3":
            self.bucket = parsed.netloc
            self.prefix = parsed.path.strip("/")
            if not self.bucket:
                raise StorageError(f"storage root {root_uri!r} has no bucket")

    # -- layout -------------------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """URI of ``parts`` below the root (each part a plain name: no '/', '..' or leading '.')."""
        return "/".join([self.root, *(_check_part(p) for p in parts)])

    def tile_uri(self, project: str, season: str, stage: str, tile_id: str) -> str:
        return self.uri(project, season, stage, tile_id)

    def stage_uri(self, project: str, season: str, stage: str) -> str:
        return self.uri(project, season, stage)

    def _relative(self, uri: str) -> str:
        if uri != self.root and not uri.startswith(self.root + "/"):
            raise StorageError(f"{uri!r} is outside the storage root {self.root!r}")
        rel = uri[len(self.root) :].strip("/")
        if any(p in {"..", "."} for p in rel.split("/")):
            raise StorageError(f"{uri!r} escapes the storage root")
        return rel

    def local_path(self, uri: str) -> Path:
        """Filesystem path of a file:// URI."""
        if self.scheme != "file":
            raise StorageError(f"{uri!r} is not on local disk")
        self._relative(uri)
        return Path(urlparse(uri).path)

    def _key(self, uri: str) -> str:
        rel = self._relative(uri)
        return "/".join(p for p in (self.prefix, rel) if p)

    # -- S3 -----------------------------------------------------------------------------------------
    @property
    def s3(self) -> Any:
        if self._s3_client is None:
            import boto3

            self._s3_client = boto3.client("s3", endpoint_url=self._s3_endpoint_url)
        return self._s3_client

    def _s3_list(self, key_prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _s3_delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[i : i + 1000]]
            if chunk:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    # -- files --------------------------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write one object/file atomically."""
        if self.scheme == "file":
            atomic_write_bytes(self.local_path(uri), data)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(uri), Body=data)

    def read_bytes(self, uri: str) -> bytes:
        try:
            if self.scheme == "file":
                return self.local_path(uri).read_bytes()
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=self._key(uri))["Body"].read())
        except FileNotFoundError as err:
            raise ArtefactMissingError(f"{uri} does not exist") from err
        except Exception as err:
            if type(err).__name__ == "NoSuchKey":
                raise ArtefactMissingError(f"{uri} does not exist") from err
            raise

    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def exists(self, uri: str) -> bool:
        if self.scheme == "file":
            return self.local_path(uri).exists()
        key = self._key(uri)
        return bool(self._s3_list(key))

    def list_names(self, uri: str) -> list[str]:
        """Names directly below ``uri`` (hidden staging names excluded)."""
        if self.scheme == "file":
            path = self.local_path(uri)
            return sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []
        prefix = self._key(uri).rstrip("/") + "/"
        names = {k[len(prefix) :].split("/", 1)[0] for k in self._s3_list(prefix)}
        return sorted(n for n in names if n and not n.startswith("."))

    def delete(self, uri: str) -> None:
        """Remove ``uri`` (file or folder) if present."""
        if self.scheme == "file":
            path = self.local_path(uri)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        else:
            key = self._key(uri)
            self._s3_delete([k for k in self._s3_list(key) if k == key or k.startswith(key.rstrip("/") + "/")])

    # -- complete-or-absent folders -----------------------------------------------------------------
    def is_complete(self, uri: str) -> bool:
        """True when the folder at ``uri`` was fully written (its marker exists)."""
        marker = f"{uri}/{MARKER}"
        if self.scheme == "file":
            return self.local_path(marker).is_file()
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(marker))
            return True
        except Exception:  # botocore ClientError 404 -> absent
            return False

    def complete_children(self, uri: str) -> set[str]:
        """Names of the folders directly below ``uri`` that are complete (one listing, not one request each)."""
        if self.scheme == "file":
            path = self.local_path(uri)
            if not path.is_dir():
                return set()
            return {p.name for p in path.iterdir() if not p.name.startswith(".") and (p / MARKER).is_file()}
        prefix = self._key(uri).rstrip("/") + "/"
        names = set()
        for key in self._s3_list(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) == 2 and parts[1] == MARKER and not parts[0].startswith("."):
                names.add(parts[0])
        return names

    def read_marker(self, uri: str) -> dict[str, Any]:
        """The completion metadata of ``uri`` (``ArtefactMissingError`` if incomplete or absent)."""
        if not self.is_complete(uri):
            raise ArtefactMissingError(f"{uri} is absent or incomplete (no {MARKER})")
        meta: dict[str, Any] = self.read_json(f"{uri}/{MARKER}")
        return meta

    @contextlib.contextmanager
    def writing_dir(self, uri: str, marker: dict[str, Any]) -> Iterator[Path]:
        """Yield a local staging folder; on clean exit its content becomes ``uri``, marker last.

        On an exception nothing at ``uri`` changes and the staging folder is removed.
        """
        if self.scheme == "file":
            final = self.local_path(uri)
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:12]}"
            staging.mkdir()
        else:
            staging = Path(tempfile.mkdtemp(prefix="lcms-staging-"))
        try:
            yield staging
            (staging / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True, default=str))
            self._publish(staging, uri)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, staging: Path, uri: str) -> None:
        if self.scheme == "file":
            final = self.local_path(uri)
            trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
            if final.exists():
                os.replace(final, trash)
            os.replace(staging, final)
            if trash.exists():
                shutil.rmtree(trash, ignore_errors=True)
            return
        key = self._key(uri).rstrip("/")
        # The old marker goes first, so the old folder stops counting as complete before it changes.
        self.s3.delete_object(Bucket=self.bucket, Key=f"{key}/{MARKER}")
        files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != MARKER)
        new_keys = {f"{key}/{p.relative_to(staging).as_posix()}" for p in files}
        stale = [k for k in self._s3_list(key + "/") if k not in new_keys]
        self._s3_delete(stale)
        for p in files:
            self.s3.upload_file(str(p), self.bucket, f"{key}/{p.relative_to(staging).as_posix()}")
        self.s3.upload_file(str(staging / MARKER), self.bucket, f"{key}/{MARKER}")

    @contextlib.contextmanager
    def reading_dir(self, uri: str) -> Iterator[Path]:
        """Yield a local folder holding the complete artefact at ``uri``."""
        if not self.is_complete(uri):
            raise ArtefactMissingError(f"{uri} is absent or incomplete (no {MARKER}); run its stage first")
        if self.scheme == "file":
            yield self.local_path(uri)
            return
        key = self._key(uri).rstrip("/") + "/"
        tmp = Path(tempfile.mkdtemp(prefix="lcms-read-"))
        try:
            for k in self._s3_list(key):
                dest = tmp / k[len(key) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, k, str(dest))
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
