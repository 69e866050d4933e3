"""Storage: layout under one root, complete-or-absent folders, crash safety, S3 over real HTTP."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lcms_tasks.errors import ArtefactMissingError, StorageError
from lcms_tasks.storage import MARKER, Storage, atomic_write_bytes


@pytest.fixture
def store(tmp_path: Path) -> Storage:
    return Storage(f"file://{tmp_path / 'root'}")


def test_layout_and_escape_protection(store: Storage, tmp_path: Path) -> None:
    uri = store.tile_uri("proj", "2023", "download", "32633_1_2")
    assert uri == f"file://{tmp_path}/root/proj/2023/download/32633_1_2"
    for bad in ("..", ".hidden", "a/b", ""):
        with pytest.raises(StorageError, match="invalid storage path component"):
            store.uri("proj", bad)
    with pytest.raises(StorageError, match="outside the storage root"):
        store.local_path(f"file://{tmp_path}/elsewhere/x")
    with pytest.raises(StorageError, match="unsupported storage root"):
        Storage("http://example.org/x")


def test_writing_dir_publishes_with_marker(store: Storage) -> None:
    uri = store.uri("p", "s", "stage", "t1")
    assert not store.is_complete(uri)
    with store.writing_dir(uri, {"run_id": "r1"}) as d:
        (d / "a.txt").write_text("one")
    assert store.is_complete(uri)
    assert store.read_marker(uri)["run_id"] == "r1"
    with store.reading_dir(uri) as d:
        assert (d / "a.txt").read_text() == "one"


def test_failed_write_leaves_previous_output_untouched(store: Storage) -> None:
    uri = store.uri("p", "s", "stage", "t1")
    with store.writing_dir(uri, {"run_id": "r1"}) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), store.writing_dir(uri, {"run_id": "r2"}) as d:
        (d / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert store.read_marker(uri)["run_id"] == "r1"
    assert (store.local_path(uri) / "a.txt").read_text() == "old"
    # No staging leftovers are visible as outputs.
    assert store.list_names(store.uri("p", "s", "stage")) == ["t1"]


def test_rerun_replaces_output(store: Storage) -> None:
    uri = store.uri("p", "s", "stage", "t1")
    with store.writing_dir(uri, {"run_id": "r1"}) as d:
        (d / "old.txt").write_text("x")
    with store.writing_dir(uri, {"run_id": "r2"}) as d:
        (d / "new.txt").write_text("y")
    assert sorted(p.name for p in store.local_path(uri).iterdir()) == [MARKER, "new.txt"]


def test_crash_mid_write_leaves_nothing_readable(store: Storage) -> None:
    """A process killed while writing (no cleanup runs) leaves no complete artefact."""
    uri = store.uri("p", "s", "stage", "t9")
    code = textwrap.dedent(f"""
        import os
        from lcms_tasks.storage import Storage
        store = Storage({store.root!r})
        with store.writing_dir({uri!r}, {{"run_id": "crash"}}) as d:
            (d / "part.bin").write_bytes(b"x" * 1000)
            os._exit(9)  # hard kill: no finally, no marker, no rename
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 9
    assert not store.is_complete(uri)
    with pytest.raises(ArtefactMissingError, match="absent or incomplete"):
        store.read_marker(uri)
    with pytest.raises(ArtefactMissingError), store.reading_dir(uri):
        pass
    assert store.list_names(store.uri("p", "s", "stage")) == []


def test_atomic_write_bytes_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("lcms_tasks.storage.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_json_roundtrip_and_missing(store: Storage) -> None:
    uri = store.uri("p", "report.json")
    store.write_json(uri, {"a": 1})
    assert store.read_json(uri) == {"a": 1}
    assert store.exists(uri)
    with pytest.raises(ArtefactMissingError, match="does not exist"):
        store.read_bytes(store.uri("p", "nope.json"))


# -- S3, against a real S3-compatible HTTP server on loopback ------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Storage:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"lcms-{abs(hash(s3_endpoint)) % 10_000}"
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    return Storage(f"s3://{bucket}/prefix", s3_endpoint_url=s3_endpoint)


def test_s3_complete_or_absent(s3_store: Storage) -> None:
    uri = s3_store.uri("p", "s", "stage", "t1")
    assert not s3_store.is_complete(uri)
    with s3_store.writing_dir(uri, {"run_id": "r1"}) as d:
        (d / "sub").mkdir()
        (d / "sub" / "a.bin").write_bytes(b"abc")
        (d / "stale.txt").write_text("x")
    assert s3_store.is_complete(uri)
    with s3_store.writing_dir(uri, {"run_id": "r2"}) as d:
        (d / "sub").mkdir()
        (d / "sub" / "a.bin").write_bytes(b"new")
    assert s3_store.read_marker(uri)["run_id"] == "r2"
    with s3_store.reading_dir(uri) as d:
        assert (d / "sub" / "a.bin").read_bytes() == b"new"
        assert not (d / "stale.txt").exists()
    with pytest.raises(RuntimeError), s3_store.writing_dir(uri, {"run_id": "r3"}) as d:
        raise RuntimeError("fail before publishing")
    assert s3_store.read_marker(uri)["run_id"] == "r2"
    assert s3_store.list_names(s3_store.uri("p", "s", "stage")) == ["t1"]
    s3_store.write_json(s3_store.uri("p", "x.json"), {"k": [1, 2]})
    assert s3_store.read_json(s3_store.uri("p", "x.json")) == {"k": [1, 2]}
    assert json.loads(s3_store.read_bytes(f"{uri}/{MARKER}"))["run_id"] == "r2"
    s3_store.delete(uri)
    assert not s3_store.is_complete(uri)
