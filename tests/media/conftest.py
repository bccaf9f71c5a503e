from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.media import MediaEngine
from tests.media.rtp_peer import RtpPeer


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
