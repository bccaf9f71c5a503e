"""Sequence numbers and timestamps (RFC 3550 appendix A.1 and A.8), no I/O.

RTP sequence numbers are 16 bit and timestamps 32 bit; both wrap. :func:`seq_delta` and
:func:`ts_delta` give the signed distance between two values the way a receiver must read
them (the shorter way round). :class:`ReceptionStats` is the per-source receiver state of
RFC 3550 A.1 (extended highest sequence number, cycles, probation, big jumps meaning a
restarted sender) plus the loss and interarrival-jitter figures a receiver report carries.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ReceptionStats",
    "SEQ_MOD",
    "TS_MOD",
    "seq_delta",
    "seq_newer",
    "ts_delta",
]

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_MAX_DROPOUT = 3000  # RFC 3550 A.1 defaults
_MAX_MISORDER = 100
_MIN_SEQUENTIAL = 2


def seq_delta(newer: int, older: int) -> int:
    """``newer - older`` for 16-bit sequence numbers, in -32768..32767."""
    return ((newer - older + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (modulo 2**16)."""
    return seq_delta(a, b) > 0


def ts_delta(newer: int, older: int) -> int:
    """``newer - older`` for 32-bit RTP timestamps, in -2**31..2**31-1."""
    return ((newer - older + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@dataclass(slots=True)
class ReceptionStats:
    """Receiver state for one SSRC (RFC 3550 A.1, A.3, A.8).

    ``update(seq, rtp_ts, arrival)`` returns whether the packet is valid (not a duplicate
    of a packet too old to count, not during probation). ``arrival`` is the arrival time in
    seconds, ``clock_rate`` converts it to timestamp units for the jitter estimate.
    """

    clock_rate: int = 8000
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = SEQ_MOD + 1
    probation: int = _MIN_SEQUENTIAL
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    duplicates: int = 0
    jitter: float = 0.0  # timestamp units
    _transit: float | None = None
    _initialised: bool = False

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._transit = None
        self.jitter = 0.0

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        if not self._initialised:
            self._initialised = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = _MIN_SEQUENTIAL
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # A source is valid once MIN_SEQUENTIAL packets came in sequence.
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    # Count the packets of the probation too (base may go below 0: fine,
                    # only differences with the extended maximum are used).
                    self.base_seq = seq - (_MIN_SEQUENTIAL - 1)
                    self.received = _MIN_SEQUENTIAL - 1
                    self._count(rtp_timestamp, arrival)
                    return True
            else:
                self.probation = _MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta == 0:
            self.duplicates += 1
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD  # wrapped round
            self.max_seq = seq
        elif udelta <= SEQ_MOD - _MAX_MISORDER:
            # A very large jump: take it as a restarted sender only if the next packet follows it.
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or reordered packet within the misorder window; counted below
        self._count(rtp_timestamp, arrival)
        return True

    def _count(self, rtp_timestamp: int, arrival: float) -> None:
        self.received += 1
        # A.8: J += (|D| - J) / 16 with D the change in relative transit time.
        transit = arrival * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            # A timestamp wrap shows as a jump of ~2**32: fold it back.
            if d > TS_MOD / 2:
                d = abs(d - TS_MOD)
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.received == 0 and self.probation:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative with duplicates, as RFC 3550 allows)."""
        return self.expected - self.received

    def fraction_lost(self) -> int:
        """Loss since the previous call, in 1/256 (the RR's fraction lost); resets the interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval
