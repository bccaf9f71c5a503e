"""Kazoo's message envelope and the one registry of message types (kapi_definition).

A message on the bus is a flat JSON object with Title-Case-Dashed keys. Every one carries the
envelope (``Event-Category``, ``Event-Name``, ``App-Name``, ``App-Version``, ``Msg-ID``), and
every message type is declared once, as a :class:`MessageType`, with its exchange, routing
key builder, required and optional fields, allowed values and simple type checks. Messages are
plain ``dict`` objects (cheap to build, encode and pass around); a type validates them when
they are built and the transports validate them again when they are received.

Messages whose (Event-Category, Event-Name) is not declared are still accepted when the
envelope is valid, as Kazoo accepts headers it does not know: the registry guards the
contracts mirliton relies on without freezing the protocol.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.errors import BusValidationError

__all__ = [
    "ENVELOPE_OPTIONAL",
    "ENVELOPE_REQUIRED",
    "MessageType",
    "Message",
    "declare",
    "lookup",
    "message_type",
    "message_types",
    "new_msg_id",
    "set_default_app",
    "validate_envelope",
    "validate_message",
]

Message = dict[str, Any]
RoutingKeyBuilder = Callable[[Mapping[str, Any]], str]
FieldType = type | tuple[type, ...]

ENVELOPE_REQUIRED: tuple[str, ...] = (
    "Event-Category",
    "Event-Name",
    "App-Name",
    "App-Version",
    "Msg-ID",
)
ENVELOPE_OPTIONAL: tuple[str, ...] = (
    "Server-ID",
    "Node",
    "Call-ID",
    "Account-ID",
    "Msg-Reply-ID",
    "Defer-Response",
    "Access-Group",
    "Geo-Location",
    "Destination-Server",
    "Log-ID",
    "Raw-Headers",
    "Server-Queue-ID",
)
_ENVELOPE_TYPES: dict[str, FieldType] = {
    "Event-Category": str,
    "Event-Name": str,
    "App-Name": str,
    "App-Version": str,
    "Msg-ID": str,
    "Server-ID": str,
    "Node": str,
    "Call-ID": str,
    "Account-ID": str,
    "Msg-Reply-ID": str,
    "Defer-Response": bool,
}

_default_app: list[str] = ["mirliton", "0.1.0"]


def set_default_app(name: str, version: str) -> None:
    """App-Name / App-Version put on messages built in this process (Kazoo's ?APP_NAME)."""
    _default_app[:] = [name, version]


def new_msg_id() -> str:
    """A fresh Msg-ID: 16 random hex digits, as Kazoo's kz_binary:rand_hex(8)."""
    return secrets.token_hex(8)


def _type_name(expected: FieldType) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def _check_type(msg_type: str | None, key: str, value: Any, expected: FieldType) -> None:
    # bool is an int in Python; a JSON true where a number is expected is still an error.
    if (
        isinstance(value, bool)
        and expected is not bool
        and not (isinstance(expected, tuple) and bool in expected)
    ):
        raise BusValidationError(key, f"expected {_type_name(expected)}, got bool", msg_type)
    if not isinstance(value, expected):
        raise BusValidationError(
            key, f"expected {_type_name(expected)}, got {type(value).__name__}", msg_type
        )


def validate_envelope(msg: Mapping[str, Any], msg_type: str | None = None) -> None:
    """Check the envelope every message carries, whatever its type."""
    if not isinstance(msg, Mapping):
        raise BusValidationError("<message>", "a message is a JSON object", msg_type)
    for key in ENVELOPE_REQUIRED:
        value = msg.get(key)
        if value is None or value == "":
            raise BusValidationError(key, "required", msg_type)
    for key, expected in _ENVELOPE_TYPES.items():
        value = msg.get(key)
        if value is not None:
            _check_type(msg_type, key, value, expected)


@dataclass(frozen=True, eq=False)
class MessageType:
    """One message type, declared once (Kazoo's kapi_definition).

    ``routing_key`` builds the routing key from the message; None means the publisher names
    the destination (replies on ``targeted`` go to the requester's Server-ID, commands on
    ``callctl`` to the call's Control-Queue).
    """

    name: str
    category: str
    event: str
    exchange: str
    routing_key: RoutingKeyBuilder | None = None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    types: Mapping[str, FieldType] = field(default_factory=dict)
    # Call-control commands share Event-Category "call" / Event-Name "command" and differ by
    # Application-Name; a type with ``application`` set owns that value.
    application: str | None = None
    # Checks beyond presence/type/values (e.g. each bridge endpoint has an Invite-Format);
    # they raise BusValidationError naming the field.
    check: Callable[[Mapping[str, Any]], None] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        known = (*ENVELOPE_REQUIRED, *ENVELOPE_OPTIONAL, *self.required, *self.optional)
        if self.application is not None:
            known = (*known, "Application-Name")
        # snake_case keyword -> Title-Case-Dashed field, e.g. call_id -> Call-ID.
        object.__setattr__(self, "_by_keyword", {k.replace("-", "").lower(): k for k in known})

    def __repr__(self) -> str:
        return f"<MessageType {self.name} {self.category}/{self.event} on {self.exchange}>"

    def build(self, fields: Mapping[str, Any] | None = None, /, **keywords: Any) -> Message:
        """A new, validated message of this type.

        Fields come as a mapping of wire names (``{"Call-ID": ...}``) and/or as keywords in
        snake case (``call_id=...``). The envelope is filled in: Event-Category/Name, App-Name,
        App-Version and a fresh Msg-ID unless given.
        """
        msg: Message = {
            "Event-Category": self.category,
            "Event-Name": self.event,
            "App-Name": _default_app[0],
            "App-Version": _default_app[1],
        }
        if self.application is not None:
            msg["Application-Name"] = self.application
        if fields:
            msg.update(fields)
        by_keyword: dict[str, str] = self._by_keyword  # type: ignore[attr-defined]
        for keyword, value in keywords.items():
            wire = by_keyword.get(keyword.replace("_", "").lower())
            if wire is None:
                raise BusValidationError(keyword, "not a field of this message", self.name)
            msg[wire] = value
        # None means "not given": an optional field left out, never a JSON null on the wire.
        for key in [k for k, v in msg.items() if v is None]:
            del msg[key]
        if "Msg-ID" not in msg:
            msg["Msg-ID"] = new_msg_id()
        self.validate(msg)
        return msg

    def validate(self, msg: Mapping[str, Any]) -> None:
        """Raise :class:`BusValidationError` naming the first field that breaks the contract."""
        name = self.name
        validate_envelope(msg, name)
        if msg["Event-Category"] != self.category:
            raise BusValidationError("Event-Category", f"must be {self.category!r}", name)
        if msg["Event-Name"] != self.event:
            raise BusValidationError("Event-Name", f"must be {self.event!r}", name)
        if self.application is not None and msg.get("Application-Name") != self.application:
            raise BusValidationError("Application-Name", f"must be {self.application!r}", name)
        for key in self.required:
            value = msg.get(key)
            if value is None or value == "":
                raise BusValidationError(key, "required", name)
        for key, expected in self.types.items():
            value = msg.get(key)
            if value is not None:
                _check_type(name, key, value, expected)
        for key, allowed in self.values.items():
            value = msg.get(key)
            if value is not None and value not in allowed:
                raise BusValidationError(
                    key, f"{value!r} is not one of {', '.join(map(str, allowed))}", name
                )
        if self.check is not None:
            self.check(msg)

    def route(self, msg: Mapping[str, Any]) -> str:
        """The routing key for ``msg`` on this type's exchange."""
        if self.routing_key is None:
            raise BusValidationError(
                "<routing-key>",
                f"{self.name} is published to a named destination: pass routing_key=",
                self.name,
            )
        return self.routing_key(msg)


_by_name: dict[str, MessageType] = {}
_by_event: dict[tuple[str, str, str | None], MessageType] = {}


def declare(msg_type: MessageType) -> MessageType:
    """Register a message type. Each (category, event, application) is declared once."""
    key = (msg_type.category, msg_type.event, msg_type.application)
    if msg_type.name in _by_name or key in _by_event:
        raise ValueError(f"message type {msg_type.name} ({key}) is already declared")
    _by_name[msg_type.name] = msg_type
    _by_event[key] = msg_type
    return msg_type


def message_type(name: str) -> MessageType:
    """The declared type called ``name`` (e.g. ``"route_req"``)."""
    try:
        return _by_name[name]
    except KeyError:
        raise KeyError(f"no message type {name!r} is declared") from None


def message_types() -> list[MessageType]:
    return list(_by_name.values())


def lookup(msg: Mapping[str, Any]) -> MessageType | None:
    """The declared type of a message, from its Event-Category/Event-Name (and Application-Name)."""
    category = msg.get("Event-Category")
    event = msg.get("Event-Name")
    if not isinstance(category, str) or not isinstance(event, str):
        return None
    found = _by_event.get((category, event, None))
    if found is None:
        application = msg.get("Application-Name")
        if isinstance(application, str):
            found = _by_event.get((category, event, application))
    return found


def validate_message(msg: Mapping[str, Any]) -> MessageType | None:
    """Validate a received message: its declared type's contract, else the envelope alone."""
    if not isinstance(msg, Mapping):
        raise BusValidationError("<message>", "a message is a JSON object")
    msg_type = lookup(msg)
    if msg_type is None:
        validate_envelope(msg)
    else:
        msg_type.validate(msg)
    return msg_type
