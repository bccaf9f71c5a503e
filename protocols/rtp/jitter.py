"""A small jitter buffer for 20 ms audio frames, no I/O.

Packets go in as they arrive (``push``), one frame comes out per playout tick (``pop``).
The buffer waits until ``depth`` frames are queued before it starts (prefill), then plays
one sequence number per tick: a missing one is a loss (``pop`` gives a frame with
``payload=None`` so the caller can conceal it); a packet arriving after its turn has passed
is *late* and dropped (counted). When it runs dry it goes back to prefilling. Adaptive mode
sets the depth from the RFC 3550 interarrival jitter: about twice the jitter, in frames,
within ``min_depth..max_depth``.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.rtp.sequence import seq_delta, ts_delta

__all__ = ["JitterBuffer", "JitterFrame"]

_RESYNC = 1000  # a jump of more sequence numbers than this is a new sender: start over


@dataclass(frozen=True, slots=True)
class JitterFrame:
    sequence: int
    timestamp: int | None
    payload: bytes | None  # None: lost (nothing arrived in time for this slot)
    payload_type: int | None = None


class JitterBuffer:
    def __init__(
        self,
        depth: int = 2,
        *,
        adaptive: bool = False,
        min_depth: int = 1,
        max_depth: int = 10,
        capacity: int = 50,
        frame_samples: int = 160,
        clock_rate: int = 8000,
    ) -> None:
        if not 0 <= min_depth <= depth <= max_depth <= capacity:
            raise ValueError("need 0 <= min_depth <= depth <= max_depth <= capacity")
        self.depth = depth
        self.adaptive = adaptive
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.capacity = capacity
        self.frame_samples = frame_samples
        self.clock_rate = clock_rate
        self._packets: dict[int, tuple[int, bytes, int]] = {}  # seq -> (ts, payload, pt)
        self._next: int | None = None  # next sequence number to play
        self._playing = False
        self._jitter = 0.0
        self._transit: float | None = None
        # Counters a receiver report or a test reads.
        self.received = 0
        self.played = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.overflows = 0
        self.underruns = 0

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self._jitter / self.clock_rate

    def reset(self) -> None:
        self._packets.clear()
        self._next = None
        self._playing = False
        self._transit = None

    def push(
        self, sequence: int, timestamp: int, payload: bytes, arrival: float | None = None,
        payload_type: int = 0,
    ) -> bool:
        """Queue a packet; False when it is late, a duplicate, or the buffer overflowed."""
        if arrival is not None:
            self._track_jitter(timestamp, arrival)
        if self._next is not None:
            distance = seq_delta(sequence, self._next)
            if abs(distance) > _RESYNC:
                self.reset()
            elif distance < 0:
                self.late += 1
                return False
        if sequence in self._packets:
            self.duplicates += 1
            return False
        self.received += 1
        self._packets[sequence] = (timestamp, payload, payload_type)
        if len(self._packets) > self.capacity:
            self._drop_oldest()
        return True

    def pop(self) -> JitterFrame | None:
        """The frame for this tick: None while prefilling or dry, else a (maybe lost) frame."""
        # Adaptive: the depth follows the jitter all the time and takes effect at the next
        # prefill (after an underrun), so playout never stalls mid-talkspurt to grow.
        target = self._target_depth()
        if not self._playing:
            if not self._packets or len(self._packets) < max(target, 1):
                return None
            self._playing = True
            self._next = self._oldest()
        if not self._packets:
            self._playing = False
            self.underruns += 1
            return None
        assert self._next is not None
        sequence = self._next
        self._next = (sequence + 1) & 0xFFFF
        entry = self._packets.pop(sequence, None)
        if entry is None:
            self.lost += 1
            return JitterFrame(sequence, None, None)
        self.played += 1
        timestamp, payload, payload_type = entry
        return JitterFrame(sequence, timestamp, payload, payload_type)

    def _oldest(self) -> int:
        reference = next(iter(self._packets))
        return min(self._packets, key=lambda s: seq_delta(s, reference))

    def _drop_oldest(self) -> None:
        oldest = self._oldest()
        del self._packets[oldest]
        self.overflows += 1
        if self._next is not None and seq_delta(oldest, self._next) >= 0:
            self._next = (oldest + 1) & 0xFFFF

    def _target_depth(self) -> int:
        if not self.adaptive:
            return self.depth
        frames = int(2 * self._jitter / self.frame_samples + 0.999)
        self.depth = max(self.min_depth, min(self.max_depth, frames + 1))
        return self.depth

    def _track_jitter(self, timestamp: int, arrival: float) -> None:
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(ts_delta(int(transit) & 0xFFFFFFFF, int(self._transit) & 0xFFFFFFFF))
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit
