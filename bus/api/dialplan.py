"""Call-control commands (kapi_dialplan): ``Event-Category: call``, ``Event-Name: command``.

Published on the direct ``callctl`` exchange with the call's Control-Queue (from route_win) as
routing key, so each type has no routing-key builder: ``bus.publish(cmd, routing_key=queue)``.
``Insert-At`` places the command in the call's FIFO: head, tail (default), flush, now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.errors import BusValidationError
from bus.messages import FieldType, MessageType, declare

__all__ = [
    "COMMANDS",
    "INSERT_AT",
    "answer",
    "bridge",
    "collect_digits",
    "conference",
    "flush_dtmf",
    "hangup",
    "noop",
    "park",
    "play",
    "play_and_collect_digits",
    "record",
    "record_call",
    "respond",
    "send_dtmf",
    "set",
    "tones",
    "tts",
]

INSERT_AT = ("head", "tail", "flush", "now")


def _command(
    application: str,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    values: dict[str, tuple[Any, ...]] | None = None,
    types: dict[str, FieldType] | None = None,
    check: Any = None,
) -> MessageType:
    return declare(
        MessageType(
            name=f"dialplan.{application}",
            category="call",
            event="command",
            exchange="callctl",
            application=application,
            required=("Call-ID", *required),
            optional=("Insert-At", "Group-ID", *optional),
            values={"Insert-At": INSERT_AT, **(values or {})},
            types=types or {},
            check=check,
        )
    )


def _check_endpoints(msg: Mapping[str, Any]) -> None:
    for index, endpoint in enumerate(msg["Endpoints"]):
        where = f"Endpoints[{index}]"
        if not isinstance(endpoint, Mapping):
            raise BusValidationError(where, "an endpoint is an object", "dialplan.bridge")
        if not endpoint.get("Invite-Format"):
            raise BusValidationError(f"{where}.Invite-Format", "required", "dialplan.bridge")


answer = _command("answer")
hangup = _command(
    "hangup", optional=("Hangup-Cause", "Other-Leg-Only"), types={"Other-Leg-Only": bool}
)
respond = _command(
    "respond",
    required=("Response-Code",),
    optional=("Response-Message",),
    types={"Response-Code": (str, int)},
)
# Media-Name: ``/system_media/<prompt id>`` (a system prompt, in ``Language``), ``/<db>/<doc id>``
# (a media document or a voicemail message of that database, db name %2F-encoded),
# ``tone_stream://...`` (FreeSWITCH's tone syntax), ``silence_stream://<ms>``; a list plays the
# pieces as one prompt (a terminator stops the whole of it).
play = _command(
    "play",
    required=("Media-Name",),
    optional=("Terminators", "Loop-Count", "Endless-Playback", "Leg", "Language"),
    types={"Media-Name": (str, list), "Terminators": list, "Loop-Count": int,
           "Endless-Playback": bool},
)
tts = _command(
    "tts",
    required=("Text",),
    optional=("Voice", "Language", "Engine", "Terminators"),
    types={"Text": str, "Terminators": list},
)
# Media-Transfer-Destination (as Kazoo's record_call): where the shard stores the WAV when the
# recording ends, ``store://<%2F-encoded db>/<doc id>`` (attachment ``Media-Name``; the document
# is created if missing), before it publishes RECORD_STOP with ``Media-Stored``.
# Silence-Hits: seconds of silence that end the recording; Time-Limit: seconds.
record = _command(
    "record",
    required=("Media-Name",),
    optional=("Time-Limit", "Silence-Threshold", "Silence-Hits", "Terminators",
              "Media-Transfer-Destination"),
    types={"Time-Limit": int, "Silence-Threshold": int, "Silence-Hits": int, "Terminators": list,
           "Media-Transfer-Destination": str},
)
# Both parties of the call, mixed (FreeSWITCH's record_session); stored as ``record`` is.
record_call = _command(
    "record_call",
    required=("Record-Action",),
    optional=("Media-Name", "Time-Limit", "Media-Transfer-Destination"),
    values={"Record-Action": ("start", "stop")},
    types={"Time-Limit": int, "Media-Transfer-Destination": str},
)
# Tones: [{"Frequencies": [440, 480], "Duration-ON": ms, "Duration-OFF": ms, "Repeat": n}].
tones = _command(
    "tones",
    required=("Tones",),
    optional=("Terminators",),
    types={"Tones": list, "Terminators": list},
)
# Collect key presses without a prompt (Kazoo collects them in kapps_call_command from DTMF
# events; here the shard does, so no digit is lost between two commands). Times in ms.
collect_digits = _command(
    "collect_digits",
    optional=("Maximum-Digits", "Terminators", "Timeout", "Interdigit-Timeout"),
    types={"Maximum-Digits": int, "Terminators": list, "Timeout": int,
           "Interdigit-Timeout": int},
)
# Drop the digits pressed while nothing was collecting (before a prompt that wants fresh ones).
flush_dtmf = _command("flush_dtmf")
noop = _command("noop", optional=("Msg-ID",))
bridge = _command(
    "bridge",
    required=("Endpoints",),
    optional=(
        "Timeout",
        "Dial-Endpoint-Method",
        "Ringback",
        "Ignore-Early-Media",
        "Continue-On-Fail",
        "Fail-On-Single-Reject",
        "Media",
        "Caller-ID-Name",
        "Caller-ID-Number",
        "Outbound-Caller-ID-Name",
        "Outbound-Caller-ID-Number",
        "Secure-RTP",
        "SIP-Transport",
        "Custom-Channel-Vars",
    ),
    values={
        "Dial-Endpoint-Method": ("single", "simultaneous"),
        "Media": ("process", "bypass", "auto"),
        "SIP-Transport": ("udp", "tcp", "tls", "ws", "wss"),
    },
    types={"Endpoints": list, "Timeout": int, "Custom-Channel-Vars": dict},
    check=_check_endpoints,
)
play_and_collect_digits = _command(
    "play_and_collect_digits",
    required=(
        "Media-Name",
        "Minimum-Digits",
        "Maximum-Digits",
        "Timeout",
        "Terminators",
        "Media-Tries",
        "Digits-Regex",
    ),
    optional=("Failed-Media-Name",),
    types={
        "Minimum-Digits": int,
        "Maximum-Digits": int,
        "Timeout": int,
        "Terminators": list,
        "Media-Tries": int,
        "Digits-Regex": str,
    },
)
send_dtmf = _command(
    "send_dtmf", required=("DTMFs",), optional=("Duration",), types={"DTMFs": str, "Duration": int}
)
set = _command(  # noqa: A001 - Kazoo's command is called "set"
    "set",
    required=("Custom-Channel-Vars", "Custom-Call-Vars"),
    optional=("Custom-Application-Vars", "Export-All"),
    types={
        "Custom-Channel-Vars": dict,
        "Custom-Call-Vars": dict,
        "Custom-Application-Vars": dict,
        "Export-All": bool,
    },
)
park = _command("park", optional=("Timeout", "Hold-Media"), types={"Timeout": int})
conference = _command(
    "conference",
    required=("Conference-ID",),
    optional=("Moderator", "Mute", "Deaf", "Profile", "Reinvite"),
    types={"Moderator": bool, "Mute": bool, "Deaf": bool, "Reinvite": bool},
)

COMMANDS: dict[str, MessageType] = {
    t.application: t  # type: ignore[misc]
    for t in (
        answer,
        hangup,
        respond,
        play,
        tts,
        record,
        bridge,
        play_and_collect_digits,
        send_dtmf,
        set,
        park,
        conference,
        record_call,
        tones,
        collect_digits,
        flush_dtmf,
        noop,
    )
}
