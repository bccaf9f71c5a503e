from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.media import MediaEngine
from tests.calls.conftest import (
    PBX,
    calls_amqp_url,  # noqa: F401 - the amqp platform's fixture
)
from tests.media.platform import BusTap
from tests.media.rtp_peer import RtpPeer
from tests.phones import Phone


class PhoneProcess(Phone):
    """A pjsua2 phone (tests/phones) that registers nowhere and calls SIP URIs; 8 kHz bridge;
    ``{"cmd": "stream"}`` plays ``tone_seconds`` of a ``tone`` Hz sine once; it records what
    it hears to ``record``, complete (``recorded``) once its call ended."""

    def __init__(self, record: Path, workdir: Path, *, tone: float = 440.0,
                 tone_seconds: float = 3.0) -> None:
        super().__init__(workdir, record=record, tone=tone, tone_seconds=tone_seconds,
                         clock_rate=8000, close_record_on_hangup=True,
                         user_agent="pjsua2-media-test", lifetime=120)


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    # A range of its own per test run keeps parallel checkouts apart; the bind skips busy ports.
    eng = MediaEngine("127.0.0.1", 41000, 41999).start()
    yield eng
    eng.stop()


@pytest.fixture
def peers() -> Iterator[list[RtpPeer]]:
    made: list[RtpPeer] = []
    yield made
    for peer in made:
        peer.close()


@pytest.fixture
def tap(pbx: PBX) -> Iterator[BusTap]:
    """The platform tests' bus tap on their module's ``pbx``."""
    t = BusTap(pbx)
    yield t
    t.stop()
