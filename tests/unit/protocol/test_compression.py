"""Compression: kombu's names and MIME types, and decompression bounded against bombs."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.exceptions import ConfigurationError, DecodeError, MessageTooLarge, MissingDependency
from celeriac.protocol import compression

BUILTIN = ["zlib", "gzip", "bzip2", "bzip", "lzma", "xz"]
MIME = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
    "zstd": "application/zstd",
    "zstandard": "application/zstd",
}
MEGABYTE = 1 << 20


@pytest.mark.parametrize("name", BUILTIN)
def test_round_trip_by_mime_type_and_by_name(name: str) -> None:
    data = b"hello world " * 1000
    mime, packed = compression.compress(data, name)
    assert mime == MIME[name]
    assert len(packed) < len(data)
    assert compression.decompress(packed, mime, None) == data
    assert compression.decompress(packed, name, None) == data


@pytest.mark.parametrize("name", list(MIME))
def test_mime_types_are_kombus(name: str) -> None:
    assert compression.mime_type_of(name) == MIME[name]


def test_reads_what_kombu_writes() -> None:
    # kombu compresses with the module-level functions of zlib, bz2 and lzma.
    data = b"payload" * 100
    assert compression.decompress(zlib.compress(data), "application/x-gzip", None) == data
    assert compression.decompress(bz2.compress(data), "application/x-bz2", None) == data
    assert compression.decompress(lzma.compress(data), "application/x-lzma", None) == data


def test_true_gzip_bodies_decode_too() -> None:
    data = b"payload" * 100
    assert compression.decompress(gzip.compress(data), "application/gzip", None) == data
    assert compression.decompress(gzip.compress(data), "application/x-gzip", None) == data


def test_zstd_round_trip() -> None:
    pytest.importorskip("zstandard")
    mime, packed = compression.compress(b"abc" * 1000, "zstd")
    assert mime == "application/zstd"
    assert compression.decompress(packed, mime, 3000) == b"abc" * 1000
    with pytest.raises(MessageTooLarge):
        compression.decompress(packed, mime, 2999)
    with pytest.raises(DecodeError, match=r"truncated|corrupt"):
        compression.decompress(packed[:-4], mime, None)


def test_zstd_bomb_stops_at_the_limit() -> None:
    zstandard = pytest.importorskip("zstandard")
    bomb = _bomb(zstandard.ZstdCompressor().compressobj(), 64)
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooLarge):
            compression.decompress(bomb, "application/zstd", MEGABYTE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MEGABYTE


def test_zstd_without_its_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(MissingDependency, match=r"pip install 'celeriac\[zstd\]'"):
        compression.compress(b"x", "zstd")
    with pytest.raises(MissingDependency, match=r"celeriac\[zstd\]"):
        compression.decompress(b"x", "application/zstd", None)


def _bomb(compressor: Any, megabytes: int) -> bytes:
    chunk = bytes(MEGABYTE)
    packed: bytes = b"".join(compressor.compress(chunk) for _ in range(megabytes)) + compressor.flush()
    return packed


BOMBS: dict[str, Callable[[], bytes]] = {
    "application/x-gzip": lambda: _bomb(zlib.compressobj(9), 64),
    "application/x-bz2": lambda: _bomb(bz2.BZ2Compressor(9), 64),
    "application/x-lzma": lambda: _bomb(lzma.LZMACompressor(preset=1), 64),
}


@pytest.mark.parametrize("mime", list(BOMBS))
def test_bombs_stop_at_the_limit_without_allocating_the_output(mime: str) -> None:
    bomb = BOMBS[mime]()
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooLarge, match="task_message_max_bytes limit of 1048576 bytes"):
            compression.decompress(bomb, mime, MEGABYTE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MEGABYTE


def test_lzma_header_claiming_a_huge_dictionary_is_refused_before_allocating_it() -> None:
    stream = lzma.compress(b"hello" * 10, format=lzma.FORMAT_ALONE)
    # Bytes 1-4 of an .lzma header are the dictionary size: claim 1 GiB.
    claim = stream[:1] + (1 << 30).to_bytes(4, "little") + stream[5:]
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="corrupt application/x-lzma body: Memory usage limit"):
            compression.decompress(claim, "application/x-lzma", MEGABYTE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MEGABYTE


@pytest.mark.parametrize("name", BUILTIN)
def test_output_exactly_at_the_limit_is_allowed_and_one_more_byte_is_not(name: str) -> None:
    mime, packed = compression.compress(b"x" * 1000, name)
    assert compression.decompress(packed, mime, 1000) == b"x" * 1000
    with pytest.raises(MessageTooLarge) as info:
        compression.decompress(packed, mime, 999)
    assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize("name", BUILTIN)
def test_corrupt_truncated_and_padded_bodies_are_decode_errors(name: str) -> None:
    mime, packed = compression.compress(b"some data " * 100, name)
    with pytest.raises(DecodeError, match="corrupt"):
        compression.decompress(b"this is not compressed at all", mime, None)
    with pytest.raises(DecodeError, match="truncated"):
        compression.decompress(packed[: len(packed) // 2], mime, None)
    with pytest.raises(DecodeError, match="stray bytes"):
        compression.decompress(packed + b"junk", mime, None)
    with pytest.raises(DecodeError, match="truncated"):
        compression.decompress(b"", mime, None)


def test_unknown_methods() -> None:
    with pytest.raises(DecodeError, match=r"unsupported compression 'application/x-snappy'"):
        compression.decompress(b"x", "application/x-snappy", None)
    with pytest.raises(ConfigurationError, match=r"unknown compression 'snappy'.*zlib"):
        compression.compress(b"x", "snappy")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(BUILTIN))
def test_any_bytes_round_trip(data: bytes, name: str) -> None:
    mime, packed = compression.compress(data, name)
    assert compression.decompress(packed, mime, len(data)) == data


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(set(MIME.values()) - {"application/zstd"})))
def test_arbitrary_bytes_decompress_or_raise_decode_error(data: bytes, mime: str) -> None:
    with contextlib.suppress(DecodeError):
        compression.decompress(data, mime, 10_000)
