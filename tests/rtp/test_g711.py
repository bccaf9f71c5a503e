"""G.711: ITU-T/Sun reference vectors, table codecs agree with the per-sample reference, and
decode(encode(x)) stays within the quantisation step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp import g711


@pytest.mark.parametrize(("sample", "code"), [
    (0, 0xFF), (-1, 0x7F), (32767, 0x80), (-32768, 0x00), (1000, 0xCE), (-1000, 0x4E),
    (8159, 0x9F), (-8159, 0x1F),
])
def test_ulaw_encode_vectors(sample: int, code: int) -> None:
    assert g711.ulaw_encode_sample(sample) == code


@pytest.mark.parametrize(("code", "sample"), [
    (0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xCE, 988), (0x9F, 8316), (0x90, 15996),
])
def test_ulaw_decode_vectors(code: int, sample: int) -> None:
    assert g711.ulaw_decode_sample(code) == sample


@pytest.mark.parametrize(("sample", "code"), [
    (0, 0xD5), (-1, 0x55), (32767, 0xAA), (-32768, 0x2A), (1000, 0xFA), (-1000, 0x7A),
])
def test_alaw_encode_vectors(sample: int, code: int) -> None:
    assert g711.alaw_encode_sample(sample) == code


@pytest.mark.parametrize(("code", "sample"), [
    (0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xFA, 1008),
])
def test_alaw_decode_vectors(code: int, sample: int) -> None:
    assert g711.alaw_decode_sample(code) == sample


def test_tables_match_the_reference_for_every_code_and_sample() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tolist() == [g711.ulaw_decode_sample(c) for c in codes]
    assert g711.alaw_decode(codes).tolist() == [g711.alaw_decode_sample(c) for c in codes]
    samples = np.arange(-32768, 32768, 7, dtype=np.int16)
    assert list(g711.ulaw_encode(samples)) == [g711.ulaw_encode_sample(int(s)) for s in samples]
    assert list(g711.alaw_encode(samples)) == [g711.alaw_encode_sample(int(s)) for s in samples]


def test_every_code_survives_decode_then_encode() -> None:
    # Each code decodes to a value that encodes back to the same code (mu-law has two
    # zeros, 0x7F and 0xFF, which both decode to 0 and encode to 0xFF).
    codes = bytes(range(256))
    again = g711.ulaw_encode(g711.ulaw_decode(codes))
    assert [c for c, a in zip(codes, again, strict=True) if c != a] == [0x7F]
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_round_trip_error_is_bounded(samples: list[int]) -> None:
    pcm = np.array(samples, dtype=np.int16)
    little_endian = pcm.astype("<i2").tobytes()
    for codec in ("PCMU", "PCMA"):
        back = g711.decode(codec, g711.encode(codec, little_endian)).astype(np.int32)
        error = np.abs(back - pcm.astype(np.int32))
        # G.711 is logarithmic: the step is ~1/16 of the magnitude, plus the smallest step.
        bound = np.abs(pcm.astype(np.int32)) // 16 + 64
        assert (error <= bound).all(), codec


def test_unknown_codec() -> None:
    with pytest.raises(ValueError):
        g711.encode("G729", b"\x00\x00")
