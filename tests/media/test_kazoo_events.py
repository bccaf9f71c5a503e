"""Media events mapped to Kazoo call event fields."""

from __future__ import annotations

from pathlib import Path

from actors.media import (
    DigitsCollected,
    DtmfReceived,
    PlaybackFinished,
    RecordingFinished,
    RecordingStarted,
    RemoteLatched,
)
from actors.media.kazoo import call_event_fields


def test_mapping() -> None:
    assert call_event_fields(DtmfReceived(1, "5", 100)) == {
        "Event-Name": "DTMF", "DTMF-Digit": "5", "DTMF-Duration": 100}
    done = call_event_fields(PlaybackFinished(1, 2, "play", "done"))
    assert done and done["Application-Name"] == "play"
    assert done["Application-Response"] == "FILE PLAYED"
    stopped = call_event_fields(PlaybackFinished(1, 2, "tone", "terminator", "#"))
    assert stopped and (stopped["Application-Name"], stopped["Application-Response"]) == (
        "tones", "#")
    collected = call_event_fields(DigitsCollected(1, 3, "1234", "terminator", "#"))
    assert collected and collected["Application-Response"] == "1234"
    assert collected["Terminator"] == "#"
    timeout = call_event_fields(DigitsCollected(1, 3, "", "timeout"))
    assert timeout and timeout["Application-Response"] == "" and "Terminator" not in timeout
    path = Path("/var/vm/msg.wav")
    assert call_event_fields(RecordingStarted(1, 4, path)) == {
        "Event-Name": "RECORD_START", "Application-Name": "record", "Media-Name": "msg.wav"}
    stop = call_event_fields(RecordingFinished(1, 4, path, 3.04, "silence"))
    assert stop and (stop["Event-Name"], stop["Length"], stop["Silence-Terminated"]) == (
        "RECORD_STOP", 3040, True)
    assert call_event_fields(RemoteLatched(1, ("1.2.3.4", 5))) is None
