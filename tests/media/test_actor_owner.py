"""The engine with its real user: a lightweight actor owning a stream (as a call leg will).
Events arrive in the actor's mailbox through ``ActorRef.send``; a crash or stop of the actor
closes its stream in ``terminate``. Here a one-level menu: a looping prompt any key stops,
then the key pressed is the choice."""

from __future__ import annotations

from typing import Any

from actors.kernel import Actor, on, spawn
from actors.media import (
    DigitsCollected,
    DtmfReceived,
    MediaEngine,
    MediaStream,
    PlaybackFinished,
)
from protocols.rtp import sine
from tests.media.rtp_peer import RtpPeer, wait_for


class MenuLeg(Actor):
    def __init__(self, engine: MediaEngine, phone: tuple[str, int]) -> None:
        self.engine = engine
        self.phone = phone
        self.stream: MediaStream | None = None
        self.choice: str | None = None
        self.log: list[str] = []

    def init(self) -> None:
        self.stream = self.engine.open_stream(owner=self.ref)
        self.stream.set_remote(*self.phone)
        self.stream.play(sine(440, 0.3), loops=0, terminators="0123456789*#")

    @on(DtmfReceived)
    def key(self, event: DtmfReceived) -> None:
        self.log.append(f"dtmf:{event.digit}")  # a leg publishes Kazoo's DTMF event here

    @on(PlaybackFinished)
    def played(self, event: PlaybackFinished) -> None:
        self.log.append(f"played:{event.reason}")
        assert self.stream is not None
        self.stream.collect_dtmf(max_digits=1, terminators="", timeout=5)

    @on(DigitsCollected)
    def collected(self, event: DigitsCollected) -> None:
        self.log.append(f"collected:{event.reason}")
        self.choice = event.digits

    def handle_call(self, request: Any) -> Any:
        if request == "state":
            return self.choice, list(self.log)
        return super().handle_call(request)

    def terminate(self, reason: Any) -> None:
        if self.stream is not None:
            self.stream.close()


def test_an_actor_drives_a_menu_through_its_mailbox(engine: MediaEngine) -> None:
    phone = RtpPeer()
    try:
        leg = spawn(MenuLeg(engine, phone.address))
        stream = engine.streams[-1]
        phone.target = stream.local_address
        wait_for(lambda: len(phone.received) >= 20)  # the prompt loops
        phone.dial("2")
        wait_for(lambda: leg.call("state")[0] is not None)
        assert leg.call("state") == (
            "2", ["dtmf:2", "played:terminator", "collected:max_digits"])
        leg.stop()
        assert stream.closed and stream not in engine.streams
    finally:
        phone.close()
