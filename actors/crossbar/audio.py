"""Voicemail audio in the format asked for: the stored WAV as it is, or converted with sox.

Messages are stored as WAV (8 kHz mono 16-bit PCM, store/voicemail.py). Kazoo answers a
message's ``raw`` in the box's ``media_extension`` (FreeSWITCH records in that format); here the
stored WAV is converted on the way out when the box (or the request's ``Accept``) asks for
another format. sox writes mp3 only with its mp3 format module (Debian libsox-fmt-mp3): when it
cannot write the format, the answer is a 406 with ``error_id: media_conversion_unavailable``,
never WAV bytes presented as something else.

The format is chosen by, in order: the ``accept`` query parameter (Kazoo takes it in place of
the header, for clients such as an ``<audio src=...>`` that cannot set headers), the ``Accept``
header when it names a specific audio type, and the box's ``media_extension`` for ``*/*``,
``audio/*`` or no header at all.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass

from actors.crossbar.errors import ApiError, NotAcceptable

__all__ = [
    "AudioFormat",
    "FORMATS",
    "choose_format",
    "convert",
    "sox_formats",
]


@dataclass(frozen=True)
class AudioFormat:
    extension: str  # what media_extension says, and the file name's extension
    content_type: str
    sox_type: str | None  # sox's output type; None: the stored WAV as it is


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "audio/wav", None),
    "mp3": AudioFormat("mp3", "audio/mpeg", "mp3"),
    "mp4": AudioFormat("mp4", "audio/mp4", "mp4"),
}

# Content types a client may ask for, by the format they name (the aliases Kazoo accepts too).
_BY_CONTENT_TYPE: dict[str, str] = {
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg-3": "mp3",
    "audio/mp4": "mp4", "audio/x-m4a": "mp4",
}
CONTENT_TYPES: tuple[str, ...] = tuple(fmt.content_type for fmt in FORMATS.values())
_CONVERT_TIMEOUT = 30.0


def _media_ranges(header: str) -> list[str]:
    """The media types of an Accept header, most preferred first, without the refused (q=0)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media))
    return [media for _q, _i, media in sorted(ranked)]


def choose_format(box_extension: object, accept_param: str | None, accept_header: str | None) -> AudioFormat:
    """The format to answer in (NotAcceptable when the client wants none we can name)."""
    # A box without media_extension never asked for anything else than what was recorded.
    preferred = FORMATS.get(box_extension if isinstance(box_extension, str) else "wav", FORMATS["wav"])
    asked = accept_param if accept_param else accept_header
    if not asked or not asked.strip():
        return preferred
    for media in _media_ranges(asked):
        if media in _BY_CONTENT_TYPE:
            return FORMATS[_BY_CONTENT_TYPE[media]]
        if media in ("*/*", "audio/*"):
            return preferred
    raise NotAcceptable(
        f"voicemail audio is available as {', '.join(CONTENT_TYPES)}; asked for {asked!r}",
        error_id="not_acceptable",
    )


@functools.lru_cache(maxsize=1)
def sox_formats() -> frozenset[str]:
    """The file formats this machine's sox lists (``sox -h``: AUDIO FILE FORMATS)."""
    try:
        done = subprocess.run(["sox", "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    for line in done.stdout.splitlines():
        if line.startswith("AUDIO FILE FORMATS:"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def convert(wav: bytes, fmt: AudioFormat) -> bytes:
    """``wav`` in ``fmt``; NotAcceptable when sox here cannot write it. Runs sox as a child
    process: under the node's gevent monkey patching the wait yields to other requests."""
    if fmt.sox_type is None:
        return wav
    if fmt.sox_type not in sox_formats():
        raise NotAcceptable(
            f"this server's sox cannot write {fmt.extension} (Debian: libsox-fmt-mp3); ask for "
            "audio/wav (Accept header or ?accept=audio/wav) or set the box's media_extension to wav",
            error_id="media_conversion_unavailable",
        )
    try:
        done = subprocess.run(
            ["sox", "-q", "-t", "wav", "-", "-t", fmt.sox_type, "-"],
            input=wav, capture_output=True, timeout=_CONVERT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ApiError(f"converting to {fmt.extension} failed: {exc}", error_id="media_conversion_failed") from None
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip()[:200]
        raise ApiError(f"converting to {fmt.extension} failed: {reason}", error_id="media_conversion_failed")
    return done.stdout
