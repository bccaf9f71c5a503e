"""HTTP byte ranges on the audio downloads (``/media/{id}/raw``, ``/messages/{id}/raw``), as
Kazoo serves them: an ``<audio>`` element seeks with ``Range: bytes=N-`` and expects a 206.

One range per request (RFC 9110 §14): a header this does not understand, or one asking for
several ranges, is ignored and the whole body goes out with 200, as the RFC allows; a range that
starts past the end is a 416 with ``Content-Range: bytes */<length>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from actors.crossbar.errors import ApiError

__all__ = ["RangeNotSatisfiable", "byte_range", "content_range", "slice_chunks"]

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)


class RangeNotSatisfiable(ApiError):
    status = 416
    error_id = "range_not_satisfiable"
    default_message = "the range asked for starts past the end of the audio"


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """``(first, last)`` (inclusive) of the one range asked for, or None for the whole body."""
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    unsatisfiable = RangeNotSatisfiable(headers={"Content-Range": f"bytes */{length}"})
    if not first_text:  # bytes=-N: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or length == 0:
            raise unsatisfiable
        return max(length - suffix, 0), length - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    if first >= length:
        raise unsatisfiable
    last = min(int(last_text), length - 1) if last_text else length - 1
    return first, last


def content_range(span: tuple[int, int], length: int) -> str:
    return f"bytes {span[0]}-{span[1]}/{length}"


def slice_chunks(chunks: Iterable[bytes], span: tuple[int, int]) -> Iterator[bytes]:
    """The bytes ``span`` of a stream of chunks, reading no further than needed."""
    start, stop = span[0], span[1] + 1
    position = 0
    for chunk in chunks:
        end = position + len(chunk)
        if end > start:
            yield chunk[max(start - position, 0):min(stop - position, len(chunk))]
        position = end
        if position >= stop:
            return
