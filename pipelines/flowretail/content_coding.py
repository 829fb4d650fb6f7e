"""HTTP content codings (RFC 9110 §8.4): which ones we speak, bounded decoding, and encoding for the simulator.

Production gateways compress whenever the request allows it, so the client must decode what it
advertises. httpx would decode too, but it inflates a whole network chunk at once: one 64 KiB chunk
of a brotli or zstd bomb becomes gigabytes before any size check runs. Here every decoder emits at
most ``_STEP`` bytes per call and stops as soon as the output passes the caller's limit, so peak
memory follows the limit, not the compression ratio.

``br`` and ``zstd`` are offered only when their libraries import (``brotli`` >= 1.2 for its
``output_buffer_limit``, ``zstandard``); the advertised list and the decoders come from one table.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType

_STEP = 256 * 1024
# RFC 8878 §3.1.1.1.2: HTTP decoders need support windows of at most 8 MiB; larger ones are refused.
_ZSTD_MAX_WINDOW = 8 * 1024 * 1024


class ContentCodingError(Exception):
    """A body whose Content-Encoding cannot be decoded (unknown coding or corrupt data)."""


class CutOffError(ContentCodingError):
    """A compressed stream that ends before its end marker: a cut-off transfer, worth a retry."""


class DecodedTooLarge(ContentCodingError):
    """Decoding passed the size limit (a decompression bomb, or just too big)."""


def _optional(name: str) -> ModuleType | None:
    try:
        return __import__(name)
    except ImportError:
        return None


_brotli = _optional("brotli")
_zstandard = _optional("zstandard")


def _zlib_chunks(data: bytes, wbits: int) -> Iterator[bytes]:
    decoder = zlib.decompressobj(wbits)
    chunk = decoder.decompress(data, _STEP)
    while chunk:
        yield chunk
        chunk = decoder.decompress(decoder.unconsumed_tail, _STEP)
    if not decoder.eof:
        raise CutOffError("the compressed stream ends before its end marker")


def _gzip_chunks(data: bytes) -> Iterator[bytes]:
    return _zlib_chunks(data, 16 + zlib.MAX_WBITS)


def _deflate_chunks(data: bytes) -> Iterator[bytes]:
    """RFC 9110 'deflate' is the zlib format; some servers send raw deflate, which is accepted too."""
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
    return _zlib_chunks(data, zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)


def _brotli_chunks(data: bytes) -> Iterator[bytes]:
    assert _brotli is not None
    decoder = _brotli.Decompressor()
    # All input goes in at once; later calls with empty input drain the output a step at a time.
    chunk = decoder.process(data, output_buffer_limit=_STEP)
    while chunk:
        yield chunk
        chunk = b"" if decoder.is_finished() else decoder.process(b"", output_buffer_limit=_STEP)
    if not decoder.is_finished():
        raise CutOffError("the compressed stream ends before its end marker")


def _zstd_chunks(data: bytes) -> Iterator[bytes]:
    assert _zstandard is not None
    decoder = _zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    with decoder.stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        while chunk := reader.read(_STEP):
            yield chunk


def _gzip_encode(body: bytes) -> bytes:
    encoder = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return encoder.compress(body) + encoder.flush()


def _brotli_encode(body: bytes) -> bytes:
    assert _brotli is not None
    result: bytes = _brotli.compress(body, quality=4)
    return result


def _zstd_encode(body: bytes) -> bytes:
    assert _zstandard is not None
    result: bytes = _zstandard.ZstdCompressor(level=3).compress(body)
    return result


_Decoder = Callable[[bytes], Iterator[bytes]]
_Encoder = Callable[[bytes], bytes]
# Server preference order (the simulator picks the first one a request accepts).
_CODINGS: dict[str, tuple[_Decoder, _Encoder, bool]] = {
    "zstd": (_zstd_chunks, _zstd_encode, _zstandard is not None),
    "br": (_brotli_chunks, _brotli_encode, _brotli is not None),
    "gzip": (_gzip_chunks, _gzip_encode, True),
    "deflate": (_deflate_chunks, zlib.compress, True),
}
AVAILABLE_CODINGS: tuple[str, ...] = tuple(name for name, (_, _, usable) in _CODINGS.items() if usable)
# What the client sends: exactly the codings it can decode.
ACCEPT_ENCODING = ", ".join(name for name in ("gzip", "deflate", "br", "zstd") if name in AVAILABLE_CODINGS)


def content_codings(header: str | None) -> list[str]:
    """The codings of a Content-Encoding header in the order they were applied (identity dropped)."""
    names = [part.strip().lower() for part in (header or "").split(",")]
    return [name for name in names if name and name != "identity"]


def decode_body(raw: bytes, header: str | None, limit: int) -> bytes:
    """Undo every coding of ``header`` (last applied first), never holding more than ``limit`` bytes.

    Raises ``DecodedTooLarge`` past the limit, ``CutOffError`` for a stream cut short and
    ``ContentCodingError`` for an unknown coding or corrupt data.
    """
    body = raw
    for name in reversed(content_codings(header)):
        entry = _CODINGS.get(name)
        if entry is None or not entry[2]:
            raise ContentCodingError(f"Content-Encoding {name!r} was not asked for (accepted: {ACCEPT_ENCODING})")
        body = _bounded(entry[0], body, name, limit)
    return body


def _bounded(decoder: _Decoder, data: bytes, name: str, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in decoder(data):
            size += len(chunk)
            if size > limit:
                raise DecodedTooLarge(f"{name}-decoded response exceeds the {limit}-byte limit")
            parts.append(chunk)
    except ContentCodingError:
        raise
    except Exception as exc:  # zlib.error, brotli.error, zstd.ZstdError: corrupt data
        raise ContentCodingError(f"not valid {name} data ({type(exc).__name__}: {exc})") from None
    return b"".join(parts)


def negotiate(accept_encoding: str | None, offered: tuple[str, ...]) -> str | None:
    """The first of ``offered`` (server preference) the request accepts with q > 0; None for identity."""
    accepted: dict[str, float] = {}
    for part in (accept_encoding or "").split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name.strip():
            accepted[name.strip().lower()] = quality
    for name in offered:
        if accepted.get(name, accepted.get("*", 0.0)) > 0:
            return name
    return None


def encode_body(body: bytes, name: str) -> bytes:
    """Compress ``body`` with one available coding (the simulator's side)."""
    return _CODINGS[name][1](body)
