"""What the media engine tells a stream's owner (a call leg). Every event names the stream
(its id) and, when it ends an operation, the operation's id returned when it was started.

Kazoo's names for the matching call events are in the docstrings: the call leg maps these to
``CHANNEL_EXECUTE_COMPLETE`` / ``DTMF`` / ``RECORD_START`` / ``RECORD_STOP``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DigitsCollected",
    "DtmfReceived",
    "MediaEvent",
    "MediaTimeout",
    "PlaybackFinished",
    "RecordingFinished",
    "RecordingStarted",
    "RemoteLatched",
]


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A key press from the far end (RFC 4733); Kazoo's ``DTMF`` call event."""

    stream_id: int
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """A play, tone or send_dtmf operation ended (``CHANNEL_EXECUTE_COMPLETE``).

    reason: ``done`` (played through), ``terminator`` (``digit`` stopped it), ``stopped``
    (the owner stopped it or started another), ``closed`` (the stream closed)."""

    stream_id: int
    op_id: int
    kind: str  # play | tone | dtmf
    reason: str
    digit: str | None = None


@dataclass(frozen=True, slots=True)
class DigitsCollected:
    """collect_dtmf ended. reason: ``max_digits``, ``terminator`` (``terminator`` holds it; it
    is not in ``digits``), ``timeout``, ``stopped``, ``closed``."""

    stream_id: int
    op_id: int
    digits: str
    reason: str
    terminator: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    """Kazoo's ``RECORD_START``."""

    stream_id: int
    op_id: int
    path: Path


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """Kazoo's ``RECORD_STOP``. ``path`` holds a complete WAV (8 kHz mono 16-bit) unless
    ``discarded``. reason: ``time_limit``, ``silence``, ``terminator`` (``digit``),
    ``stopped``, ``closed`` (the call ended: what was recorded is kept)."""

    stream_id: int
    op_id: int
    path: Path
    seconds: float
    reason: str
    digit: str | None = None
    discarded: bool = False


@dataclass(frozen=True, slots=True)
class RemoteLatched:
    """Symmetric RTP: the stream now sends to where the far end's packets come from."""

    stream_id: int
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """No RTP for ``seconds`` (the stream's ``rtp_timeout``): the far end is probably gone."""

    stream_id: int
    seconds: float


MediaEvent = (
    DtmfReceived | PlaybackFinished | DigitsCollected | RecordingStarted | RecordingFinished
    | RemoteLatched | MediaTimeout
)
