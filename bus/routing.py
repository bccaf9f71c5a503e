"""Exchanges and routing keys as Kazoo's (kz_amqp.hrl, amqp_util), and AMQP topic matching.

The same functions route messages on the ``local`` transport, so both transports agree on
what a binding such as ``call.*.abc`` or ``registration.#`` receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

__all__ = [
    "DIRECT",
    "EXCHANGES",
    "FANOUT",
    "TOPIC",
    "TopicTrie",
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


class _TrieNode:
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.values: dict[Any, None] = {}


class TopicTrie:
    """Topic bindings indexed by word, as RabbitMQ's topic exchange does.

    Matching walks the trie once per routing key instead of testing every binding, so a
    ``callevt`` exchange with one ``call.*.<call-id>`` binding per live call routes each event
    with a few dictionary lookups however many calls there are.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root = _TrieNode()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str, value: Any) -> None:
        node = self._root
        for word in pattern.split("."):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _TrieNode()
            node = child
        if value not in node.values:
            node.values[value] = None
            self._size += 1

    def remove(self, pattern: str, value: Any) -> None:
        path = [self._root]
        words = pattern.split(".")
        for word in words:
            child = path[-1].children.get(word)
            if child is None:
                return
            path.append(child)
        if value not in path[-1].values:
            return
        del path[-1].values[value]
        self._size -= 1
        # Prune the branch it leaves empty.
        for depth in range(len(words), 0, -1):
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[words[depth - 1]]

    def match(self, routing_key: str) -> list[Any]:
        words = routing_key.split(".")
        count = len(words)
        found: dict[Any, None] = {}
        seen: set[tuple[int, int]] = set()
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            state = (id(node), index)
            if state in seen:
                continue
            seen.add(state)
            children = node.children
            hash_child = children.get("#")
            if hash_child is not None:
                # "#" takes zero or more words: continue after each possible amount.
                for rest in range(index, count + 1):
                    stack.append((hash_child, rest))
            if index == count:
                found.update(node.values)
                continue
            exact = children.get(words[index])
            if exact is not None:
                stack.append((exact, index + 1))
            star = children.get("*")
            if star is not None:
                stack.append((star, index + 1))
        return list(found)
