"""PostgreSQL's binary COPY format: the header, the trailer and the field encodings the loader shares.

A binary COPY stream is a header, then per row a 16-bit field count and per field a 32-bit
length (-1: NULL) and the value in the type's binary ("send") form, then a -1 trailer. The loader
(:class:`lcms_tasks.store.load._Encoder`) assembles rows from one bytes object per row for the
fixed-width fields (a numpy record array viewed as ``V<n>``), shared bytes for repeated values
(names, tile lists, run ids: encoded once with the functions here) and the geometry's WKB, joined
with one ``bytes.join``.

Binary forms used: ``uuid`` 16 bytes; ``integer`` big-endian int32; ``double precision`` big-endian
IEEE float64; ``text`` UTF-8 bytes; ``timestamptz`` int64 microseconds since 2000-01-01 UTC;
``text[]`` a 1-D array header (ndim, has-null flag, element type OID 25, length, lower bound 1) and
the elements; ``geometry`` PostGIS EWKB (its send/receive form).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)
TEXT_OID = 25
_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def field(value: bytes) -> bytes:
    """One field: its length and its bytes."""
    return struct.pack(">i", len(value)) + value


def text(value: str) -> bytes:
    return field(value.encode("utf-8"))


def timestamptz(value: dt.datetime) -> bytes:
    if value.tzinfo is None:
        raise ValueError(f"timestamptz needs an aware datetime, got {value!r}")
    delta = value - _EPOCH_2000
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return field(struct.pack(">q", micros))


def text_array(items: Sequence[str]) -> bytes:
    """A ``text[]`` field (1-D, no NULLs)."""
    if not items:
        return field(struct.pack(">iiI", 0, 0, TEXT_OID))
    body = struct.pack(">iiIii", 1, 0, TEXT_OID, len(items), 1) + b"".join(text(s) for s in items)
    return field(body)
