"""Body compression under kombu's names and MIME types, with decompression that cannot be bombed.

A message's ``compression`` header holds the MIME type (``application/x-gzip`` for zlib), as Celery
sends it. kombu's ``gzip`` is an alias of ``zlib``: both write a zlib stream as ``application/x-gzip``.
Decompression stops as soon as the output would pass ``max_bytes``, so a small compressed body can never
make the process allocate more than the limit.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import ConfigurationError, DecodeError, MessageTooLarge, MissingDependency

__all__ = ["compress", "decompress", "mime_type_of"]


@dataclass(frozen=True, slots=True)
class _Method:
    mime: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int | None], bytes]


def _bounded(make: Callable[[], Any], unlimited: int) -> Callable[[bytes, int | None], bytes]:
    """Wrap a zlib/bz2/lzma decompressor factory; ``unlimited`` is its max_length for "no limit"."""

    def run(data: bytes, max_bytes: int | None) -> bytes:
        decompressor = make()
        # Asking for one byte more than allowed tells "exactly at the limit" from "over it".
        output: bytes = decompressor.decompress(data, unlimited if max_bytes is None else max_bytes + 1)
        if max_bytes is not None and len(output) > max_bytes:
            raise _too_large(max_bytes)
        _check_end(decompressor.eof, decompressor.unused_data)
        return output

    return run


def _check_end(eof: bool, unused_data: bytes) -> None:
    if not eof:
        raise DecodeError("compressed body is truncated")
    if unused_data:
        raise DecodeError(f"{len(unused_data)} stray bytes after the compressed body")


def _zstd_compress(data: bytes) -> bytes:
    packed: bytes = _zstandard().ZstdCompressor().compress(data)
    return packed


def _zstd_decompress(data: bytes, max_bytes: int | None) -> bytes:
    zstandard = _zstandard()
    try:
        if max_bytes is not None:
            # zstandard's one-shot decompressor takes no output limit, so a bounded streaming read
            # first proves the output fits.
            reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
            size = 0
            while chunk := reader.read(max_bytes + 1 - size):
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        output: bytes = decompressor.decompress(data)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt application/zstd body: {exc}") from None
    _check_end(decompressor.eof, decompressor.unused_data)
    return output


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingDependency("zstd compression", "zstd") from None
    return zstandard


def _too_large(max_bytes: int) -> MessageTooLarge:
    return MessageTooLarge(f"decompressed body is over the task_message_max_bytes limit of {max_bytes} bytes")


# wbits 47 = 32 + 15: accept a zlib or a gzip header, so true gzip bodies decode as well.
_ZLIB = _Method("application/x-gzip", zlib.compress, _bounded(lambda: zlib.decompressobj(wbits=47), 0))
_BZ2 = _Method("application/x-bz2", bz2.compress, _bounded(bz2.BZ2Decompressor, -1))
# The stream header sets the dictionary size, which liblzma allocates up front: without a cap, a
# 50-byte body can claim a gigabyte. 128 MiB fits every preset (preset 9 needs 65 MiB).
_LZMA_MEMLIMIT = 128 << 20
_LZMA = _Method(
    "application/x-lzma",
    lzma.compress,
    _bounded(lambda: lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT), -1),
)
_ZSTD = _Method("application/zstd", _zstd_compress, _zstd_decompress)

_BY_NAME: dict[str, _Method] = {
    "zlib": _ZLIB,
    "gzip": _ZLIB,
    "bzip2": _BZ2,
    "bzip": _BZ2,
    "lzma": _LZMA,
    "xz": _LZMA,
    "zstd": _ZSTD,
    "zstandard": _ZSTD,
}
_BY_MIME: dict[str, _Method] = {method.mime: method for method in _BY_NAME.values()}
# kombu never writes these, but they are unambiguous, so bodies from other senders still decode.
_BY_MIME.update({"application/gzip": _ZLIB, "application/x-xz": _LZMA})


def _find(kind: str) -> _Method | None:
    key = kind.strip().lower()
    return _BY_MIME.get(key) or _BY_NAME.get(key)


def mime_type_of(name: str) -> str:
    """The MIME type a compression method is sent as, e.g. ``application/x-gzip`` for ``zlib``.

    Raises:
        ConfigurationError: the name is not a known compression method.
    """
    method = _find(name)
    if method is None:
        raise ConfigurationError(f"unknown compression {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    return method.mime


def compress(data: bytes, name: str) -> tuple[str, bytes]:
    """Compress ``data`` with the method ``name`` (or its MIME type); returns (MIME type, compressed).

    Raises:
        ConfigurationError: the method is unknown.
        MissingDependency: the method needs an extra that is not installed (zstd).
    """
    mime = mime_type_of(name)
    return mime, _BY_MIME[mime].compress(data)


def decompress(data: bytes, kind: str, max_bytes: int | None) -> bytes:
    """Decompress ``data`` compressed with ``kind``, a MIME type (the ``compression`` header) or a name.

    ``max_bytes`` is the most output allowed (``None``: no limit); decompression stops as soon as the
    output would pass it.

    Raises:
        MessageTooLarge: the output would be larger than ``max_bytes``.
        DecodeError: the method is unknown, or the data is corrupt, truncated or followed by stray bytes.
        MissingDependency: the method needs an extra that is not installed (zstd).
    """
    method = _find(kind)
    if method is None:
        raise DecodeError(f"unsupported compression {kind!r}; known: {', '.join(sorted(_BY_MIME))}")
    try:
        return method.decompress(bytes(data), max_bytes)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        # bz2 reports corrupt data as OSError, lzma as LZMAError, zlib as zlib.error.
        raise DecodeError(f"corrupt {method.mime} body: {exc}") from None
