"""G.711 mu-law (PCMU) and A-law (PCMA) without ``audioop`` (removed in Python 3.13).

The per-sample functions are the ITU-T G.711 reference algorithm (as in Sun's public g711.c)
and exist to build the tables and to be read. Bulk conversion goes through two lookup tables
with numpy: decoding indexes a 256-entry int16 table with the code bytes; encoding indexes a
65536-entry table with the samples' 16-bit patterns, so a 20 ms frame costs two vector
operations whatever its content.

Linear audio here is signed 16-bit, little-endian when given as bytes (WAV's layout).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_decode_sample",
    "alaw_encode",
    "alaw_encode_sample",
    "decode",
    "encode",
    "ulaw_decode",
    "ulaw_decode_sample",
    "ulaw_encode",
    "ulaw_encode_sample",
]

Pcm = npt.NDArray[np.int16]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
ULAW_SILENCE = 0xFF  # the code for 0
ALAW_SILENCE = 0xD5


def ulaw_encode_sample(sample: int) -> int:
    """One signed 16-bit sample to a mu-law code."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = max((magnitude >> 7).bit_length() - 1, 0)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode_sample(code: int) -> int:
    """One mu-law code to a signed 16-bit sample."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return _ULAW_BIAS - magnitude if code & 0x80 else magnitude - _ULAW_BIAS


def alaw_encode_sample(sample: int) -> int:
    """One signed 16-bit sample to an A-law code."""
    value = sample >> 3  # A-law works on 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = 8
    for index, end in enumerate(_ALAW_SEGMENT_ENDS):
        if value <= end:
            segment = index
            break
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return code ^ mask


def alaw_decode_sample(code: int) -> int:
    """One A-law code to a signed 16-bit sample."""
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _tables() -> tuple[Pcm, Pcm, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    ulaw_dec = np.array([ulaw_decode_sample(c) for c in range(256)], dtype=np.int16)
    alaw_dec = np.array([alaw_decode_sample(c) for c in range(256)], dtype=np.int16)
    # Index = the sample's bit pattern as uint16, so the table is read with a view, no math.
    samples = np.arange(65536, dtype=np.uint16).view(np.int16).tolist()
    ulaw_enc = np.array([ulaw_encode_sample(s) for s in samples], dtype=np.uint8)
    alaw_enc = np.array([alaw_encode_sample(s) for s in samples], dtype=np.uint8)
    return ulaw_dec, alaw_dec, ulaw_enc, alaw_enc


_ULAW_DECODE, _ALAW_DECODE, _ULAW_ENCODE, _ALAW_ENCODE = _tables()


def _as_pcm(pcm: bytes | bytearray | memoryview | Pcm) -> Pcm:
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.int16, copy=False)
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


def ulaw_encode(pcm: bytes | bytearray | memoryview | Pcm) -> bytes:
    """16-bit linear (bytes, little-endian, or an int16 array) to mu-law bytes."""
    return _ULAW_ENCODE[_as_pcm(pcm).view(np.uint16)].tobytes()


def alaw_encode(pcm: bytes | bytearray | memoryview | Pcm) -> bytes:
    return _ALAW_ENCODE[_as_pcm(pcm).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """mu-law bytes to an int16 array (``.tobytes()`` gives little-endian PCM on x86/ARM)."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def encode(encoding: str, pcm: bytes | bytearray | memoryview | Pcm) -> bytes:
    """Encode with the codec an SDP rtpmap names (``PCMU`` or ``PCMA``)."""
    name = encoding.upper()
    if name == "PCMU":
        return ulaw_encode(pcm)
    if name == "PCMA":
        return alaw_encode(pcm)
    raise ValueError(f"unsupported codec {encoding}")


def decode(encoding: str, data: bytes | bytearray | memoryview) -> Pcm:
    name = encoding.upper()
    if name == "PCMU":
        return ulaw_decode(data)
    if name == "PCMA":
        return alaw_decode(data)
    raise ValueError(f"unsupported codec {encoding}")
