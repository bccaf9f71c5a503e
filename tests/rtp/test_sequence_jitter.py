"""Sequence/timestamp arithmetic, reception statistics and the jitter buffer."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp import JitterBuffer, ReceptionStats, seq_delta, seq_newer, ts_delta


@given(st.integers(0, 65535), st.integers(-32768, 32767))
def test_seq_delta_inverts_addition(base: int, step: int) -> None:
    assert seq_delta((base + step) & 0xFFFF, base) == step


@given(st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1))
def test_ts_delta_inverts_addition(base: int, step: int) -> None:
    assert ts_delta((base + step) & 0xFFFFFFFF, base) == step


def test_wraparound_ordering() -> None:
    assert seq_newer(0, 65535) and seq_newer(5, 65530) and not seq_newer(65530, 5)
    assert ts_delta(100, 2**32 - 60) == 160


def _feed(stats: ReceptionStats, seqs: list[int], start: float = 0.0) -> None:
    for i, seq in enumerate(seqs):
        stats.update(seq, (seq * 160) & 0xFFFFFFFF, start + i * 0.02)


def test_extended_sequence_across_wrap_and_loss() -> None:
    stats = ReceptionStats()
    seqs = [(65530 + i) & 0xFFFF for i in range(20)]
    del seqs[10]  # one lost after the wrap
    _feed(stats, seqs)
    assert stats.cycles == 65536
    assert stats.extended_max_seq == 65536 + 13
    assert stats.expected == 20 and stats.received == 19 and stats.lost == 1
    assert stats.fraction_lost() == (1 << 8) // 20
    assert stats.fraction_lost() == 0  # nothing new since


def test_duplicates_are_not_counted_as_received() -> None:
    stats = ReceptionStats()
    _feed(stats, [1, 2, 3, 3, 4])
    assert stats.duplicates == 1 and stats.received == 4 and stats.lost == 0


def test_restarted_sender_is_taken_after_two_in_sequence() -> None:
    stats = ReceptionStats()
    _feed(stats, [100, 101, 102])
    assert not stats.update(40000, 0, 1.0)  # a jump: maybe garbage
    assert stats.update(40001, 160, 1.02)  # it continues: a restarted sender
    assert stats.max_seq == 40001 and stats.lost == 0


def test_jitter_zero_for_perfect_pacing_and_positive_otherwise() -> None:
    steady = ReceptionStats()
    _feed(steady, list(range(1, 50)))
    assert steady.jitter < 1e-6
    shaky = ReceptionStats()
    rng = random.Random(1)
    for seq in range(1, 200):
        shaky.update(seq, seq * 160, seq * 0.02 + rng.uniform(0, 0.01))
    assert 5 < shaky.jitter < 80  # timestamp units (8 per ms)


def test_jitter_buffer_reorders_and_reports_loss() -> None:
    jb = JitterBuffer(depth=3)
    for seq in (10, 12, 11, 14):
        assert jb.push(seq, seq * 160, bytes([seq]))
    played = [jb.pop() for _ in range(5)]
    assert [f.payload for f in played if f] == [b"\x0a", b"\x0b", b"\x0c", None, b"\x0e"]
    assert jb.lost == 1 and jb.played == 4
    assert jb.pop() is None and jb.underruns == 1


def test_jitter_buffer_prefills_then_drops_late_packets() -> None:
    jb = JitterBuffer(depth=2)
    jb.push(65535, 0, b"a")
    assert jb.pop() is None  # prefilling
    jb.push(0, 160, b"b")
    assert jb.pop().payload == b"a"  # type: ignore[union-attr]
    assert jb.pop().payload == b"b"  # type: ignore[union-attr]
    assert not jb.push(65535, 0, b"a")  # its turn has passed
    assert jb.late == 1
    assert not jb.push(1, 320, b"c") or not jb.push(1, 320, b"c")
    assert jb.duplicates == 1


def test_jitter_buffer_overflow_and_resync() -> None:
    jb = JitterBuffer(depth=1, max_depth=4, capacity=4)
    for seq in range(6):
        jb.push(seq, seq * 160, bytes([seq]))
    assert jb.overflows == 2 and len(jb) == 4
    assert jb.pop().payload == b"\x02"  # type: ignore[union-attr]
    jb.push(30000, 0, b"n")  # a new sender far away: start over
    assert jb.pop().payload == b"n"  # type: ignore[union-attr]


def test_adaptive_depth_grows_with_jitter() -> None:
    rng = random.Random(2)
    jb = JitterBuffer(depth=1, adaptive=True, min_depth=1, max_depth=8)
    for seq in range(200):
        jb.push(seq, seq * 160, b"x", arrival=seq * 0.02 + rng.uniform(0, 0.06))
        jb.pop()
    assert jb.depth >= 2
    calm = JitterBuffer(depth=4, adaptive=True, min_depth=1, max_depth=8)
    for seq in range(200):
        calm.push(seq, seq * 160, b"x", arrival=seq * 0.02)
        calm.pop()
    assert calm.depth == 1
