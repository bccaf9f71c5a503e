"""RFC 4733 telephone-events (DTMF over RTP), no I/O.

Payload (section 2.3): event (8 bits), E end bit, R reserved, volume (6 bits, -dBm0),
duration (16 bits, timestamp units since the event's start). Every packet of one event
carries the event's start timestamp; the first has the RTP marker bit; the end packet is
sent three times (section 2.5.1.4) with the same duration.

- :class:`DtmfReceiver` turns a stream of such packets into one :class:`DtmfDigit` per key
  press: the three redundant end packets, retransmissions and reordering never give a digit
  twice; an event whose end packets were all lost still ends, when the next event begins or
  after a silence (``poll(now)``).
- :class:`DtmfSender` produces the packets of one key press at 20 ms intervals: a marked
  first packet, growing durations, three end packets.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

__all__ = [
    "DTMF_EVENTS",
    "DtmfDigit",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "digit_for_event",
    "event_for_digit",
]

DTMF_EVENTS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")


def event_for_digit(digit: str) -> int:
    index = DTMF_EVENTS.find(digit.upper())
    if index < 0 or len(digit) != 1:
        raise ValueError(f"{digit!r} is not a DTMF digit")
    return index


def digit_for_event(event: int) -> str | None:
    """The digit for events 0-15; None for others (e.g. 16, flash)."""
    return DTMF_EVENTS[event] if 0 <= event < 16 else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0-63, -dBm0 (larger is quieter)
    duration: int  # timestamp units

    def to_bytes(self) -> bytes:
        return _PAYLOAD.pack(
            self.event & 0xFF,
            (0x80 if self.end else 0) | (self.volume & 0x3F),
            min(self.duration, 0xFFFF),
        )

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise ValueError("telephone-event payload shorter than 4 bytes")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    duration: int  # timestamp units, as the sender last reported it
    timestamp: int  # the event's RTP timestamp (its start)
    ended: bool  # False: ended by timeout or by the next event, its end packets were lost


@dataclass(slots=True)
class _Current:
    timestamp: int
    event: int
    duration: int
    last_seen: float


class DtmfReceiver:
    """Digits from telephone-event packets of one stream.

    ``receive(payload, timestamp, marker, now)`` returns the digits completed by this packet
    (zero or more); ``poll(now)`` returns an event whose packets stopped for ``timeout``
    seconds without an end. Ended events are remembered by their timestamp (the last few)
    so late retransmissions of their end packets are ignored.
    """

    def __init__(self, timeout: float = 0.5, memory: int = 16) -> None:
        self.timeout = timeout
        self._current: _Current | None = None
        self._done: deque[int] = deque(maxlen=memory)

    def receive(
        self, payload: bytes, timestamp: int, marker: bool, now: float
    ) -> list[DtmfDigit]:
        try:
            event = TelephoneEvent.parse(payload)
        except ValueError:
            return []
        out: list[DtmfDigit] = []
        if timestamp in self._done:
            return out  # a redundant end packet or a retransmission of a finished event
        current = self._current
        if current is not None and current.timestamp != timestamp:
            # A new event (marked or not: its first packets may be lost) started before the
            # old one's end arrived: the old one is over.
            out.extend(self._finish(ended=False))
            current = None
        if current is None:
            current = self._current = _Current(timestamp, event.event, event.duration, now)
        else:
            current.duration = max(current.duration, event.duration)
            current.last_seen = now
        if event.end:
            current.duration = max(current.duration, event.duration)
            out.extend(self._finish(ended=True))
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        current = self._current
        if current is not None and now - current.last_seen >= self.timeout:
            return self._finish(ended=False)
        return []

    def _finish(self, ended: bool) -> list[DtmfDigit]:
        current = self._current
        self._current = None
        if current is None:
            return []
        self._done.append(current.timestamp)
        digit = digit_for_event(current.event)
        if digit is None:
            return []
        return [DtmfDigit(digit, current.duration, current.timestamp, ended)]


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """What to put in one RTP packet: the payload, the marker, and the RTP timestamp (the
    event's start, the same for all its packets)."""

    payload: bytes
    marker: bool
    timestamp: int


class DtmfSender:
    """The packets of one key press, one per 20 ms frame (``next_packets()`` per tick).

    ``duration_ms`` is how long the key is held (RFC 4733 suggests >= 40 ms; phones use
    ~100 ms); ``volume`` in -dBm0 (10 is the customary level). Three end packets close the
    event; after them ``done`` is True.
    """

    END_REPEATS = 3

    def __init__(
        self,
        digit: str,
        start_timestamp: int,
        *,
        duration_ms: int = 100,
        volume: int = 10,
        samples_per_frame: int = 160,
        clock_rate: int = 8000,
    ) -> None:
        self.event = event_for_digit(digit)
        self.timestamp = start_timestamp & 0xFFFFFFFF
        self.volume = volume
        self.step = samples_per_frame
        self.total = max(samples_per_frame, duration_ms * clock_rate // 1000)
        self._elapsed = 0
        self._ends_sent = 0

    @property
    def done(self) -> bool:
        return self._ends_sent >= self.END_REPEATS

    @property
    def length(self) -> int:
        """Timestamp units the event covers (the next audio starts this far after it)."""
        return self.total

    def next_packet(self) -> DtmfPacket | None:
        if self.done:
            return None
        first = self._elapsed == 0
        self._elapsed = min(self._elapsed + self.step, self.total)
        end = self._elapsed >= self.total
        if end:
            self._ends_sent += 1
        payload = TelephoneEvent(self.event, end, self.volume, self._elapsed).to_bytes()
        return DtmfPacket(payload, first, self.timestamp)

    def packets(self) -> list[DtmfPacket]:
        """Every packet at once (for tests and for senders that pace them themselves)."""
        out = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out
