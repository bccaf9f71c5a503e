"""Media for anchored call legs: one engine per calls shard (RTP ports, one 20 ms clock),
streams that play, record, collect DTMF, bridge and conference; system prompts."""

from __future__ import annotations

from actors.media.audio import (
    WavWriter,
    load_audio,
    read_wav,
    recover_partial_recordings,
    wav_bytes,
)
from actors.media.engine import Conference, MediaEngine, MediaStream
from actors.media.events import (
    DigitsCollected,
    DtmfReceived,
    MediaEvent,
    MediaTimeout,
    PlaybackFinished,
    RecordingFinished,
    RecordingStarted,
    RemoteLatched,
)
from actors.media.ports import PortAllocator, PortsExhausted

__all__ = [
    "Conference",
    "DigitsCollected",
    "DtmfReceived",
    "MediaEngine",
    "MediaEvent",
    "MediaStream",
    "MediaTimeout",
    "PlaybackFinished",
    "PortAllocator",
    "PortsExhausted",
    "RecordingFinished",
    "RecordingStarted",
    "RemoteLatched",
    "WavWriter",
    "load_audio",
    "read_wav",
    "recover_partial_recordings",
    "wav_bytes",
]
