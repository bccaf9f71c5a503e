"""Audio files for the media engine: reading prompts (WAV 16-bit PCM, WAV mu-law/A-law, raw
.ulaw/.alaw) as 8 kHz int16 arrays, and writing recordings as 8 kHz mono 16-bit WAV.

A recording is written to ``<path>.part`` and renamed into place when it ends, so a process
killed mid-recording leaves either nothing at ``path`` or a complete file, never a WAV with a
header that does not match its data. What such a process left behind is dealt with by
:func:`recover_partial_recordings` when the shard starts again: each ``.part`` is either
completed (its header sizes set from what reached the disk, cut to whole samples) or, when it
holds less than ``min_seconds`` of audio, removed.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from protocols.rtp.g711 import alaw_decode, ulaw_decode

__all__ = [
    "Pcm",
    "WavWriter",
    "load_audio",
    "read_wav",
    "recover_partial_recordings",
    "wav_bytes",
]

Pcm = npt.NDArray[np.int16]
RATE = 8000
_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_ALAW = 6
_WAVE_FORMAT_MULAW = 7


def _resample(samples: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    if rate == RATE or len(samples) == 0:
        return samples
    # Linear interpolation is enough for speech prompts already band-limited by their source;
    # prompts rendered by `mirliton prompts install` are 8 kHz and skip this.
    duration = len(samples) / rate
    target = np.arange(int(duration * RATE)) / RATE
    return np.interp(target, np.arange(len(samples)) / rate, samples)


def _chunks(data: bytes) -> dict[bytes, bytes]:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        name, size = struct.unpack_from("<4sI", data, offset)
        chunks.setdefault(name, data[offset + 8:offset + 8 + size])
        offset += 8 + size + (size & 1)
    return chunks


def read_wav(data: bytes) -> Pcm:
    """A WAV (PCM 8/16-bit, mu-law or A-law; any rate; mono or the first channel) as 8 kHz
    int16."""
    chunks = _chunks(data)
    if b"fmt " not in chunks or b"data" not in chunks:
        raise ValueError("WAV without fmt or data chunk")
    fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunks[b"fmt "])
    if fmt == 0xFFFE and len(chunks[b"fmt "]) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real format
        fmt = struct.unpack_from("<H", chunks[b"fmt "], 24)[0]
    raw = chunks[b"data"]
    if fmt == _WAVE_FORMAT_PCM and bits == 16:
        samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
    elif fmt == _WAVE_FORMAT_PCM and bits == 8:
        samples = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8)
    elif fmt == _WAVE_FORMAT_MULAW and bits == 8:
        samples = ulaw_decode(raw)
    elif fmt == _WAVE_FORMAT_ALAW and bits == 8:
        samples = alaw_decode(raw)
    else:
        raise ValueError(f"unsupported WAV format {fmt} with {bits} bits")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels)[:, 0]
    if rate != RATE:
        return np.clip(_resample(samples.astype(np.float64), rate), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(samples, dtype=np.int16)


def load_audio(source: str | Path | bytes | Pcm, *, encoding: str | None = None) -> Pcm:
    """Audio to play: an int16 array as is; WAV bytes or a WAV file; raw mu-law (``.ulaw``,
    ``.pcmu``, ``.mu``) or A-law (``.alaw``, ``.pcma``) files, or raw bytes with
    ``encoding="PCMU"|"PCMA"``."""
    if isinstance(source, np.ndarray):
        return source.astype(np.int16, copy=False)
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        suffix = ""
    else:
        path = Path(source)
        data = path.read_bytes()
        suffix = path.suffix.lower()
    kind = (encoding or "").upper()
    if kind == "PCMU" or suffix in (".ulaw", ".pcmu", ".mu", ".ul"):
        return ulaw_decode(data)
    if kind == "PCMA" or suffix in (".alaw", ".pcma", ".al"):
        return alaw_decode(data)
    return read_wav(data)


def wav_bytes(pcm: Pcm, rate: int = RATE) -> bytes:
    """A mono 16-bit PCM WAV of ``pcm``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()


class WavWriter:
    """Appends frames to ``<path>.part``; ``close()`` finishes the header and renames it to
    ``path``; ``discard()`` removes the partial file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".part")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wav: wave.Wave_write | None = wave.open(str(self.partial), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(RATE)
        self.samples = 0

    @property
    def seconds(self) -> float:
        return self.samples / RATE

    def write(self, pcm: Pcm) -> None:
        if self._wav is None:
            raise ValueError("recording already closed")
        self._wav.writeframesraw(pcm.astype("<i2").tobytes())
        self.samples += len(pcm)

    def close(self) -> Path:
        if self._wav is not None:
            self._wav.close()  # writes the final sizes into the header
            self._wav = None
            os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        self.partial.unlink(missing_ok=True)


def recover_partial_recordings(directory: str | Path, *, min_seconds: float = 0.5,
                               recursive: bool = True) -> list[Path]:
    """Complete the ``*.wav.part`` files a killed process left under ``directory``.

    A part file holds the 44-byte header :class:`WavWriter` wrote at the start (sizes still 0)
    followed by the samples that reached the disk. Each becomes a valid WAV at its final name
    (the ``.part`` suffix removed) with the header's sizes set from the data length; one with
    less than ``min_seconds`` of audio, or not a WAV at all, is removed. Returns the
    recordings recovered.
    """
    root = Path(directory)
    if not root.exists():
        return []
    recovered: list[Path] = []
    parts = root.rglob("*.wav.part") if recursive else root.glob("*.wav.part")
    for part in sorted(parts):
        final = part.with_name(part.name[: -len(".part")])
        try:
            with part.open("r+b") as f:
                header = f.read(44)
                if len(header) < 44 or header[:4] != b"RIFF" or header[36:40] != b"data":
                    raise ValueError("not a WavWriter file")
                f.seek(0, os.SEEK_END)
                data_bytes = (f.tell() - 44) // 2 * 2
                if data_bytes < min_seconds * RATE * 2:
                    raise ValueError("too short to keep")
                f.truncate(44 + data_bytes)
                f.seek(4)
                f.write(struct.pack("<I", 36 + data_bytes))
                f.seek(40)
                f.write(struct.pack("<I", data_bytes))
        except (OSError, ValueError):
            part.unlink(missing_ok=True)
            continue
        os.replace(part, final)
        recovered.append(final)
    return recovered
