"""A scripted RTP endpoint for the engine tests: a gevent UDP socket on loopback that sends
paced 20 ms packets and keeps every packet it receives."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import numpy as np
from gevent import socket

from protocols.rtp import DtmfSender, RtpPacket, decode, encode, frames, parse_rtp

__all__ = ["RtpPeer", "dominant_frequencies", "wait_for"]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Run the hub until ``predicate()`` is truthy; AssertionError after ``timeout``."""
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {predicate}")):
        while not (value := predicate()):
            gevent.sleep(0.005)
    return value


def dominant_frequencies(pcm: np.ndarray, count: int = 1) -> list[float]:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    return sorted(float(freqs[i]) for i in np.argsort(spectrum)[-count:])


class RtpPeer:
    def __init__(self, codec: str = "PCMU", payload_type: int | None = None,
                 telephone_event_pt: int = 101) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.sock.getsockname()
        self.codec = codec
        self.payload_type = payload_type if payload_type is not None else (
            0 if codec == "PCMU" else 8)
        self.telephone_event_pt = telephone_event_pt
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.received: list[RtpPacket] = []
        self.target: tuple[str, int] | None = None
        self._reader = gevent.spawn(self._read)
        self._senders: list[gevent.Greenlet] = []

    def _read(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(2048)
            except OSError:
                return
            self.received.append(parse_rtp(data))

    def send_packet(self, payload: bytes, payload_type: int, *, marker: bool = False,
                    timestamp: int | None = None) -> None:
        assert self.target is not None
        self.seq = (self.seq + 1) & 0xFFFF
        packet = RtpPacket(payload_type, self.seq, self.ts if timestamp is None else timestamp,
                           self.ssrc, payload, marker)
        self.sock.sendto(packet.to_bytes(), self.target)

    def stream(self, pcm: np.ndarray, ptime_ms: int = 20) -> gevent.Greenlet:
        """Send ``pcm`` as ``ptime_ms`` packets in real time (a greenlet; join it to wait),
        paced on an absolute schedule."""
        size = 8 * ptime_ms

        def run() -> None:
            start = time.monotonic()
            for index, frame in enumerate(frames(pcm, size)):
                self.ts = (self.ts + size) & 0xFFFFFFFF
                self.send_packet(encode(self.codec, frame), self.payload_type)
                gevent.sleep(max(0.0, start + (index + 1) * ptime_ms / 1000 - time.monotonic()))
        greenlet = gevent.spawn(run)
        self._senders.append(greenlet)
        return greenlet

    def dial(self, digits: str) -> None:
        """RFC 4733 key presses, paced at 20 ms, blocking until sent."""
        for digit in digits:
            self.ts = (self.ts + 160) & 0xFFFFFFFF
            sender = DtmfSender(digit, self.ts)
            for packet in sender.packets():
                self.send_packet(packet.payload, self.telephone_event_pt, marker=packet.marker,
                                 timestamp=packet.timestamp)
                gevent.sleep(0.02)
            self.ts = (self.ts + sender.length) & 0xFFFFFFFF
            gevent.sleep(0.06)

    def audio(self, packets: Iterable[RtpPacket] | None = None) -> np.ndarray:
        chosen = [p for p in (self.received if packets is None else packets)
                  if p.payload_type in (0, 8)]
        if not chosen:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([decode("PCMU" if p.payload_type == 0 else "PCMA", p.payload)
                               for p in chosen])

    def close(self) -> None:
        for greenlet in self._senders:
            greenlet.kill(block=False)
        self._reader.kill(block=False)
        self.sock.close()
