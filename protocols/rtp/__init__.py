"""RTP for the media engine, sans-I/O: packets in and out as bytes, time passed in.

- ``packet``: RTP (RFC 3550 header, CSRCs, extension, padding) and RTCP (SR, RR, BYE).
- ``sequence``: 16-bit sequence / 32-bit timestamp arithmetic, per-source reception stats
  (extended sequence numbers, loss, interarrival jitter).
- ``jitter``: a small jitter buffer (fixed or adaptive depth, reordering, late drops).
- ``g711``: PCMU / PCMA tables (no ``audioop``).
- ``dtmf``: RFC 4733 telephone-events, receive (end de-duplication) and send.
- ``tones``: call-progress and DTMF tones, 20 ms framing (160 samples at 8 kHz).
- ``inband``: DTMF key presses detected in the audio itself.
"""

from __future__ import annotations

from protocols.rtp.dtmf import (
    DTMF_EVENTS,
    DtmfDigit,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    digit_for_event,
    event_for_digit,
)
from protocols.rtp.g711 import (
    alaw_decode,
    alaw_encode,
    decode,
    encode,
    ulaw_decode,
    ulaw_encode,
)
from protocols.rtp.inband import InbandDtmfDetector
from protocols.rtp.jitter import JitterBuffer, JitterFrame
from protocols.rtp.packet import (
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpUnknown,
    RtpError,
    RtpPacket,
    build_rtcp,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
)
from protocols.rtp.sequence import ReceptionStats, seq_delta, seq_newer, ts_delta
from protocols.rtp.tones import (
    BUSY,
    CLOCK_RATE,
    FRAME_MS,
    RINGBACK,
    SAMPLES_PER_FRAME,
    ToneGenerator,
    ToneSpec,
    ToneStep,
    dtmf_tone,
    frames,
    sine,
)

__all__ = [
    "BUSY",
    "CLOCK_RATE",
    "DTMF_EVENTS",
    "DtmfDigit",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "FRAME_MS",
    "InbandDtmfDetector",
    "JitterBuffer",
    "JitterFrame",
    "RINGBACK",
    "ReceptionStats",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpUnknown",
    "RtpError",
    "RtpPacket",
    "SAMPLES_PER_FRAME",
    "TelephoneEvent",
    "ToneGenerator",
    "ToneSpec",
    "ToneStep",
    "alaw_decode",
    "alaw_encode",
    "build_rtcp",
    "decode",
    "digit_for_event",
    "dtmf_tone",
    "encode",
    "event_for_digit",
    "frames",
    "is_rtcp",
    "parse_rtcp",
    "parse_rtp",
    "seq_delta",
    "seq_newer",
    "sine",
    "ts_delta",
    "ulaw_decode",
    "ulaw_encode",
]
