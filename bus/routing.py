"""Exchanges and routing keys as Kazoo's (kz_amqp.hrl, amqp_util), and AMQP topic matching.

The same functions route messages on the ``local`` transport, so both transports agree on
what a binding such as ``call.*.abc`` or ``registration.#`` receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

__all__ = [
    "DIRECT",
    "EXCHANGES",
    "FANOUT",
    "TOPIC",
    "ExchangeType",
    "encode_key_word",
    "topic_matcher",
]

ExchangeType = Literal["direct", "topic", "fanout"]
DIRECT: ExchangeType = "direct"
TOPIC: ExchangeType = "topic"
FANOUT: ExchangeType = "fanout"

# Kazoo's exchanges (kz_amqp.hrl). Both transports declare them all at start.
EXCHANGES: dict[str, ExchangeType] = {
    "targeted": DIRECT,
    "callctl": DIRECT,
    "callevt": TOPIC,
    "callmgr": TOPIC,
    "registrar": TOPIC,
    "configuration": TOPIC,
    "notifications": TOPIC,
    "nodes": FANOUT,
    "resources": TOPIC,
    "presence": TOPIC,
    "conference": TOPIC,
    "kapps": TOPIC,
    "cdr": TOPIC,
}

_ENCODE = str.maketrans({".": "%2E", "*": "%2A", "#": "%23", "%": "%25"})


def encode_key_word(value: object) -> str:
    """One routing-key word from a value (amqp_util:encode): dots and wildcards escaped.

    Call-IDs and realms contain dots; unescaped they would split into several words and
    ``call.*.<call-id>`` bindings would never match.
    """
    return str(value).translate(_ENCODE)


def topic_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a routing key matches an AMQP topic binding pattern.

    ``*`` is exactly one word, ``#`` zero or more. Matching runs on ``"." + key`` so that each
    word carries its leading dot and ``#`` can swallow zero words without dangling dots.
    """
    parts: list[str] = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    regex = re.compile("".join(parts) + r"\Z", re.DOTALL)

    def matches(routing_key: str) -> bool:
        return regex.match("." + routing_key) is not None

    return matches
