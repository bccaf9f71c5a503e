"""Fixtures shared by the SIP message-layer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.sip import Message, Request

# ../shared relative to the repository root; the torture messages are never copied in the repo.
RFC4475_DIR = Path(__file__).resolve().parents[2].parent / "shared/testdata/rfc4475"


def snapshot(message: Message) -> dict[str, Any]:
    """Everything a parse yields, as comparable plain values (typed headers included)."""
    start: tuple[Any, ...]
    if isinstance(message, Request):
        start = ("request", message.method, message.uri)
    else:
        start = ("response", message.status, message.reason)  # type: ignore[attr-defined]
    headers = message.headers
    return {
        "start": start,
        # Content-Length is left out: serialization adds or fixes it to match the body.
        "headers": [
            (key, value)
            for key, (_, value) in zip(headers.keys(), headers, strict=True)
            if key != "content-length"
        ],
        "vias": [str(via) for via in message.vias],
        "from": (str(message.from_), message.from_.display, message.from_.tag)
        if "from" in headers
        else None,
        "to": (str(message.to), message.to.display, message.to.tag) if "to" in headers else None,
        "call_id": message.call_id if "call-id" in headers else None,
        "cseq": message.cseq if "cseq" in headers else None,
        "contacts": [str(contact) for contact in message.contacts],
        "max_forwards": message.max_forwards,
        "body": message.body,
    }


@pytest.fixture
def rfc4475() -> Callable[[str], bytes]:
    def _read(name: str) -> bytes:
        return (RFC4475_DIR / name).read_bytes()

    return _read


@pytest.fixture
def take_snapshot() -> Callable[[Message], dict[str, Any]]:
    return snapshot
