"""Media events as Kazoo call events: the fields a call leg publishes on ``callevt`` when its
stream reports something (ecallmgr's translation of FreeSWITCH's events).

- :class:`DtmfReceived` -> ``DTMF`` with ``DTMF-Digit`` and ``DTMF-Duration`` (ms).
- :class:`PlaybackFinished` -> ``CHANNEL_EXECUTE_COMPLETE`` of ``play`` / ``tones`` /
  ``send_dtmf`` with FreeSWITCH's ``Application-Response`` (``FILE PLAYED``, or the
  terminator digit that stopped it, as playback reports it).
- :class:`DigitsCollected` -> ``CHANNEL_EXECUTE_COMPLETE`` of ``play_and_collect_digits``
  whose ``Application-Response`` is the digits (empty on timeout).
- :class:`RecordingStarted` / :class:`RecordingFinished` -> ``RECORD_START`` /
  ``RECORD_STOP`` with ``Media-Name``, ``Length`` (ms), ``Terminator``, ``Silence-Terminated``.

The leg adds the envelope and the call fields (``Call-ID``, ``Custom-Channel-Vars``, ...).
Events with no Kazoo counterpart (latching, RTP timeout) give None.
"""

from __future__ import annotations

from typing import Any

from actors.media.events import (
    DigitsCollected,
    DtmfReceived,
    MediaEvent,
    PlaybackFinished,
    RecordingFinished,
    RecordingStarted,
)

__all__ = ["call_event_fields"]

_APPLICATIONS = {"play": "play", "tone": "tones", "dtmf": "send_dtmf"}


def call_event_fields(event: MediaEvent) -> dict[str, Any] | None:
    if isinstance(event, DtmfReceived):
        return {"Event-Name": "DTMF", "DTMF-Digit": event.digit,
                "DTMF-Duration": event.duration_ms}
    if isinstance(event, PlaybackFinished):
        response = "FILE PLAYED" if event.reason == "done" else (
            event.digit if event.reason == "terminator" else "FILE NOT PLAYED")
        return {"Event-Name": "CHANNEL_EXECUTE_COMPLETE",
                "Application-Name": _APPLICATIONS.get(event.kind, event.kind),
                "Application-Response": response, "Reason": event.reason}
    if isinstance(event, DigitsCollected):
        return {"Event-Name": "CHANNEL_EXECUTE_COMPLETE",
                "Application-Name": "play_and_collect_digits",
                "Application-Response": event.digits, "Reason": event.reason,
                **({"Terminator": event.terminator} if event.terminator else {})}
    if isinstance(event, RecordingStarted):
        return {"Event-Name": "RECORD_START", "Application-Name": "record",
                "Media-Name": event.path.name}
    if isinstance(event, RecordingFinished):
        fields: dict[str, Any] = {
            "Event-Name": "RECORD_STOP", "Application-Name": "record",
            "Media-Name": event.path.name, "Length": int(round(event.seconds * 1000)),
            "Silence-Terminated": event.reason == "silence", "Reason": event.reason,
        }
        if event.digit:
            fields["Terminator"] = event.digit
        if event.discarded:
            fields["Discarded"] = True
        return fields
    return None
