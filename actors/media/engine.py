"""The media engine of a calls shard: RTP streams for anchored call legs, one clock for all.

One :class:`MediaEngine` per process (per calls shard). It owns the RTP port range and one
gevent greenlet, the *clock*, that wakes every 20 ms and does the periodic work of every
stream that has some: the next frame of a prompt or tone, the next RFC 4733 packet of a key
press, one frame out of the jitter buffer for a recording or a conference, the conference
mix, timeouts, RTCP reports (every ~5 s per stream, on the odd port above its RTP port),
the Prometheus series (once a second). No stream has a greenlet of its own:
sockets are watched by libev io watchers whose callbacks read the datagram that woke them, so
a relayed packet (a bridge) leaves the moment it arrives instead of waiting for the next tick.

A call leg uses it like this (events go to ``owner``: an :class:`~actors.kernel.ActorRef`
or any callable taking one event)::

    stream = engine.open_stream(owner=self.ref)           # binds an even port of the range
    answer = stream.answer_sdp(invite.body)               # our port in the SDP; far end,
                                                          # codec, telephone-event taken
    # (a B-leg: offer = stream.offer_sdp(); later stream.accept_answer_sdp(offer, body))
    op = stream.play("/path/prompt.wav", terminators="#") # -> PlaybackFinished(op_id=op)
    stream.collect_dtmf(max_digits=4, terminators="#")    # -> DigitsCollected
    stream.record(path, time_limit=120, silence_seconds=5)# -> RecordingStarted/Finished
    engine.bridge(stream, other_stream)                   # relay both ways
    engine.conference("room").join(stream)                # mix
    stream.close()                                        # ends what runs (reason "closed")

Everything here runs in the one gevent hub of the process: io callbacks and the clock never
run at the same time, so streams need no locks. Owner callbacks are called from the clock
greenlet (never from an io callback) and must not block: an ActorRef's ``send`` is right.
"""

from __future__ import annotations

import itertools
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent
import numpy as np

from actors.media.audio import Pcm, WavWriter, load_audio
from actors.media.events import (
    DigitsCollected,
    DtmfReceived,
    MediaEvent,
    MediaTimeout,
    PlaybackFinished,
    RecordingFinished,
    RecordingStarted,
    RemoteLatched,
)
from actors.media.metrics import MEDIA_LATE_TICKS, MEDIA_PACKETS, MEDIA_STREAMS
from actors.media.ports import PortAllocator
from protocols.rtp.dtmf import DtmfReceiver, DtmfSender
from protocols.rtp.g711 import decode, encode
from protocols.rtp.inband import InbandDtmfDetector
from protocols.rtp.jitter import JitterBuffer
from protocols.rtp.packet import (
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpUnknown,
    RtpError,
    build_rtcp,
    parse_rtcp,
    parse_rtp,
)
from protocols.rtp.sequence import ReceptionStats, seq_delta, ts_delta
from protocols.rtp.tones import SAMPLES_PER_FRAME, ToneGenerator, ToneSpec
from protocols.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    Codec,
    LocalMedia,
    NegotiatedStream,
    NegotiationFailure,
    SessionDescription,
    build_answer,
    build_offer,
    parse_sdp,
    process_answer,
)

__all__ = ["Conference", "MediaEngine", "MediaStream", "Owner"]

log = logging.getLogger("mirliton.media")

TICK = 0.020  # one 20 ms frame
_HEADER = struct.Struct("!BBHII")
_SILENCE = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
_STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}

Owner = Callable[[MediaEvent], None]
AudioSource = str | Path | bytes | Pcm


def _as_owner(owner: Any) -> Owner | None:
    if owner is None:
        return None
    send = getattr(owner, "send", None)
    if callable(send):
        return send
    if callable(owner):
        return owner
    raise TypeError("owner must be an ActorRef (with send) or a callable")


_NTP_EPOCH_OFFSET = 2208988800  # 1900-01-01 to 1970-01-01, seconds


def _ntp_now() -> int:
    """The wall clock as a 64-bit NTP timestamp (RTCP sender reports)."""
    now = time.time() + _NTP_EPOCH_OFFSET
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * (1 << 32))


def _sdes_cname(ssrc: int, cname: str) -> RtcpUnknown:
    """An SDES packet with our CNAME (RFC 3550 6.5: every compound packet carries one)."""
    text = cname.encode()[:255]
    body = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    body += bytes(-len(body) % 4)
    return RtcpUnknown(202, 1, body)


# -- operations -------------------------------------------------------------------------------


class _Player:
    """Frames of a prompt, ``loops`` times (0: until stopped)."""

    kind = "play"

    def __init__(self, op_id: int, pcm: Pcm, loops: int, terminators: str) -> None:
        self.op_id = op_id
        self.pcm = pcm
        self.loops = loops
        self.terminators = terminators
        self._position = 0
        self._played = 0

    def next_frame(self) -> Pcm | None:
        if len(self.pcm) == 0:
            return None
        if self._position >= len(self.pcm):
            self._played += 1
            if self.loops and self._played >= self.loops:
                return None
            self._position = 0
        frame = self.pcm[self._position:self._position + SAMPLES_PER_FRAME]
        self._position += SAMPLES_PER_FRAME
        if len(frame) < SAMPLES_PER_FRAME:
            frame = np.concatenate([frame, _SILENCE[: SAMPLES_PER_FRAME - len(frame)]])
        return frame


class _Tone:
    kind = "tone"

    def __init__(self, op_id: int, spec: ToneSpec, frames_left: int | None, terminators: str):
        self.op_id = op_id
        self.generator = ToneGenerator(spec)
        self.frames_left = frames_left
        self.terminators = terminators

    def next_frame(self) -> Pcm | None:
        if self.frames_left is not None:
            if self.frames_left <= 0:
                return None
            self.frames_left -= 1
        return self.generator.next_frame()


class _DtmfOut:
    """RFC 4733 key presses, one after the other, with a gap of silence between them."""

    kind = "dtmf"
    terminators = ""

    def __init__(self, op_id: int, digits: str, duration_ms: int, gap_ms: int) -> None:
        self.op_id = op_id
        self.digits = deque(digits)
        self.duration_ms = duration_ms
        self.gap_frames = max(1, gap_ms // 20)
        self.sender: DtmfSender | None = None
        self.gap = 0


class _Collector:
    def __init__(
        self, op_id: int, max_digits: int, terminators: str, timeout: float,
        inter_digit_timeout: float, now: float,
    ) -> None:
        self.op_id = op_id
        self.max_digits = max_digits
        self.terminators = terminators
        self.timeout = timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.digits = ""
        self.deadline = now + timeout


class _Recorder:
    def __init__(
        self, op_id: int, writer: WavWriter, time_limit: float, terminators: str,
        silence_threshold: int, silence_seconds: float | None, both_directions: bool = False,
    ) -> None:
        self.op_id = op_id
        self.both_directions = both_directions
        self.writer = writer
        self.max_samples = int(time_limit * 8000) if time_limit > 0 else None
        self.terminators = terminators
        self.silence_threshold = silence_threshold
        self.silence_frames_needed = (
            int(silence_seconds / TICK) if silence_seconds and silence_seconds > 0 else None
        )
        # With silence detection, silent frames wait here until a louder one follows: a
        # recording that ends on silence does not keep the silence that ended it.
        self.pending_silence: list[Pcm] = []


# -- streams ----------------------------------------------------------------------------------


class MediaStream:
    """One anchored RTP stream: a UDP port of the range, the far end, the codec.

    Symmetric RTP (``latch=True``): the first packet from an address other than the SDP's
    makes the stream send there (a phone behind NAT); later packets from yet another address
    are dropped until :meth:`set_remote` is called again (a re-INVITE), so nobody can take the
    stream over by spraying packets at the port. Packets from the SDP's own address are always
    taken and make the stream send there again.
    """

    _ids = itertools.count(1)

    def __init__(self, engine: MediaEngine, sock: Any, owner: Owner | None, *, latch: bool,
                 rtp_timeout: float | None, jitter_depth: int,
                 rtcp_sock: Any = None) -> None:
        self.id = next(self._ids)
        self.engine = engine
        self._sock = sock
        self._rtcp_sock = rtcp_sock
        self._rtcp_remote: tuple[str, int] | None = None  # where the far end's RTCP comes from
        self._sdp_rtcp_port: int | None = None
        self._rtcp_due = 0.0
        self._octets_sent = 0
        self._last_sr: tuple[int, float] | None = None  # (middle NTP bits, arrival) of its SR
        self.round_trip_ms: float | None = None
        self.remote_fraction_lost: float | None = None
        self.local_address: tuple[str, int] = sock.getsockname()[:2]
        self._owner = owner
        self.latch = latch
        self.rtp_timeout = rtp_timeout
        self.remote: tuple[str, int] | None = None
        self.sending = True  # False while the far end holds the call
        self._sdp_remote: tuple[str, int] | None = None
        self._latched = False
        self.codec = "PCMU"
        self.payload_type = 0
        self.telephone_event_pt: int | None = 101
        self.ssrc = random.getrandbits(32)
        # Outgoing sequence/timestamp state; both start random (RFC 3550 5.1).
        self._out_seq = random.getrandbits(16)
        self._out_ts = random.getrandbits(32)
        self._out_time: float | None = None
        self._out_source: object = None  # who produced the last packet sent (rebase on change)
        self._relay_map: tuple[int, int, int] | None = None  # (source ssrc, seq off, ts off)
        self.in_stats: ReceptionStats | None = None
        self._in_ssrc: int | None = None
        self.jitter = JitterBuffer(jitter_depth)
        self._dtmf = DtmfReceiver()
        self._inband: InbandDtmfDetector | None = None
        self._digits: deque[str] = deque(maxlen=32)  # received while nothing collected them
        self._output: _Player | _Tone | _DtmfOut | None = None
        self._collector: _Collector | None = None
        self._recorder: _Recorder | None = None
        self.peer: MediaStream | None = None
        self.conference: Conference | None = None
        self._last_in: Pcm = _SILENCE
        self._frame_tick = -1  # the engine tick _last_in belongs to
        self._backlog: Pcm = _SILENCE[:0]  # decoded inbound samples not yet taken
        self._packet_samples = SAMPLES_PER_FRAME
        self._last_rx = time.monotonic()
        self._timed_out = False
        self.closed = False
        self._op_ids = itertools.count(1)
        self.packets_received = 0
        self.packets_sent = 0
        self.packets_dropped = 0
        hub = gevent.get_hub()
        self._watcher = hub.loop.io(sock.fileno(), 1)
        self._watcher.start(self._on_readable)
        self._rtcp_watcher = None
        if rtcp_sock is not None:
            self._rtcp_watcher = hub.loop.io(rtcp_sock.fileno(), 1)
            self._rtcp_watcher.start(self._on_rtcp_readable)

    def __repr__(self) -> str:
        return f"<MediaStream #{self.id} {self.local_address[0]}:{self.local_port}>"

    # -- configuration --------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self.local_address[1]

    def local_media(self, codecs: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT),
                    **fields: Any) -> LocalMedia:
        """What to put in the SDP this leg sends: the engine's advertised address, our port."""
        return LocalMedia(address=self.engine.advertise, audio_port=self.local_port,
                          codecs=codecs, session_id=str(self.ssrc), **fields)

    def set_remote(self, host: str, port: int, *, codec: str = "PCMU",
                   payload_type: int | None = None,
                   telephone_event_pt: int | None = 101,
                   rtcp_port: int | None = None) -> None:
        """The far end as its SDP says; resets latching (a re-INVITE may move it).
        ``rtcp_port``: its ``a=rtcp`` port when not the RTP port + 1."""
        codec = codec.upper()
        if codec not in ("PCMU", "PCMA"):
            raise ValueError(f"unsupported codec {codec}")
        self.remote = (host, port) if host and port else None
        self._sdp_remote = self.remote
        self._sdp_rtcp_port = rtcp_port
        self._rtcp_remote = None
        self._latched = False
        self.sending = True
        self.codec = codec
        self.payload_type = payload_type if payload_type is not None else (
            0 if codec == "PCMU" else 8)
        self.telephone_event_pt = telephone_event_pt

    def set_remote_from(self, negotiated: NegotiatedStream) -> None:
        """The far end from offer/answer (``build_answer(...).streams[0]`` or
        ``process_answer``). Its direction says whether we send: a far end holding the call
        (sendonly/inactive on its side) gets nothing from us until it resumes."""
        self.set_remote(
            negotiated.remote_address, negotiated.remote_port,
            codec=negotiated.codec.encoding, payload_type=negotiated.codec.payload_type,
            telephone_event_pt=(negotiated.telephone_event.payload_type
                                if negotiated.telephone_event else None),
            rtcp_port=negotiated.remote_rtcp_port or None,
        )
        self.sending = negotiated.direction in ("sendrecv", "sendonly")

    # -- SDP: how a call leg anchors media -------------------------------------------------

    def answer_sdp(self, offer: SessionDescription | bytes | str,
                   **local: Any) -> Answer | NegotiationFailure:
        """Answer the far end's offer with this stream's port and take what was agreed
        (an A-leg answering the caller, or a re-INVITE). On failure the stream is unchanged;
        answer the request with ``failure.status``."""
        sdp = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
        answer = build_answer(sdp, self.local_media(**local))
        if isinstance(answer, Answer):
            self.set_remote_from(answer.streams[0])
        return answer

    def offer_sdp(self, **local: Any) -> SessionDescription:
        """An offer with this stream's port and our codecs (a B-leg calling an endpoint);
        give the answer to :meth:`accept_answer_sdp`."""
        return build_offer(self.local_media(**local))

    def accept_answer_sdp(self, offer: SessionDescription,
                          answer: SessionDescription | bytes | str) -> NegotiationFailure | None:
        """Take the far end's answer to our offer; a NegotiationFailure when it accepted no
        audio stream we offered (the leg should hang up with 488)."""
        sdp = answer if isinstance(answer, SessionDescription) else parse_sdp(answer)
        streams = process_answer(offer, sdp)
        if isinstance(streams, NegotiationFailure):
            return streams
        self.set_remote_from(streams[0])
        return None

    # -- operations -----------------------------------------------------------------------

    def play(self, source: AudioSource | Sequence[AudioSource], *, loops: int = 1,
             terminators: str = "", encoding: str | None = None) -> int:
        """Play a prompt (see :func:`load_audio` for the formats), or several one after the
        other as one operation ("you have" + "3" + "new messages"); replaces what was
        playing. ``loops=0`` plays until stopped."""
        if isinstance(source, str | Path | bytes | np.ndarray):
            pcm = load_audio(source, encoding=encoding)
        else:
            parts = [load_audio(part, encoding=encoding) for part in source]
            pcm = np.concatenate(parts) if parts else _SILENCE[:0]
        return self._start_output(lambda op: _Player(op, pcm, loops, terminators))

    def tone(self, spec: ToneSpec, *, duration: float | None = None,
             terminators: str = "") -> int:
        """Generate a tone (``RINGBACK``, ``BUSY``, ``dtmf_tone("123")``, ...); ``duration``
        in seconds bounds an endless cadence."""
        frames = None if duration is None else max(1, int(round(duration / TICK)))
        return self._start_output(lambda op: _Tone(op, spec, frames, terminators))

    def send_dtmf(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> int:
        """Send key presses as RFC 4733 events (the far end must have offered
        telephone-event)."""
        if self.telephone_event_pt is None:
            raise ValueError("the far end takes no telephone-event")
        for d in digits:
            if d.upper() not in "0123456789*#ABCD":
                raise ValueError(f"{d!r} is not a DTMF digit")
        return self._start_output(lambda op: _DtmfOut(op, digits.upper(), duration_ms, gap_ms))

    def stop_playback(self) -> None:
        self._end_output("stopped")

    @property
    def playing(self) -> bool:
        return self._output is not None

    def collect_dtmf(self, *, max_digits: int = 1, terminators: str = "#",
                     timeout: float = 5.0, inter_digit_timeout: float = 3.0,
                     use_buffered: bool = True) -> int:
        """Collect up to ``max_digits`` key presses. ``timeout``: for the first digit;
        ``inter_digit_timeout``: between the next ones. With ``use_buffered`` digits pressed
        before (e.g. the one that stopped a menu prompt) count first; else they are dropped."""
        if max_digits < 1:
            raise ValueError("max_digits must be >= 1")
        self._end_collect("stopped")
        op = next(self._op_ids)
        now = time.monotonic()
        self._collector = _Collector(op, max_digits, terminators, timeout,
                                     inter_digit_timeout, now)
        buffered = list(self._digits)
        self._digits.clear()
        if use_buffered:
            for index, digit in enumerate(buffered):
                if self._collector is None or self._collector.op_id != op:
                    # Collected enough: the digits pressed after stay for the next collect.
                    self._digits.extend(buffered[index:])
                    break
                self._collect(digit, now)
        self.engine._activate(self)
        return op

    def stop_collect(self) -> None:
        self._end_collect("stopped")

    def detect_inband_dtmf(self, enabled: bool = True) -> None:
        """Also listen for key presses sent as audio tones (a far end without RFC 4733);
        they come as the same DtmfReceived events and feed collect/terminators alike. Costs
        a decode and a small DFT per frame, so it is off unless asked for."""
        self._inband = InbandDtmfDetector() if enabled else None
        if enabled:
            self._reset_inbound()
            self.engine._activate(self)

    def flush_digits(self) -> str:
        """Drop (and return) the digits received while nothing was collecting."""
        digits = "".join(self._digits)
        self._digits.clear()
        return digits

    def record(self, path: str | Path, *, time_limit: float = 3600.0, terminators: str = "",
               silence_threshold: int = 200, silence_seconds: float | None = None,
               both_directions: bool = False) -> int:
        """Record what the far end sends to a WAV (8 kHz mono 16-bit) at ``path``; with
        ``both_directions``, while bridged, both parties mixed (Kazoo's ``record_call``).

        Ends at ``time_limit`` seconds, on a terminator digit, after ``silence_seconds`` of
        consecutive frames whose mean absolute level is under ``silence_threshold`` (16-bit
        scale; 200 is about -44 dBFS; that trailing silence is left out of the file), on
        :meth:`stop_record`, or when the stream closes (the recording is kept). The file
        appears at ``path`` only once complete.
        """
        self._end_record("stopped")
        op = next(self._op_ids)
        writer = WavWriter(path)
        self._recorder = _Recorder(op, writer, time_limit, terminators, silence_threshold,
                                   silence_seconds, both_directions)
        self._reset_inbound()
        if both_directions and self.peer is not None:
            self.peer._reset_inbound()
        self.engine._activate(self)
        self._emit(RecordingStarted(self.id, op, writer.path))
        return op

    def stop_record(self, *, discard: bool = False) -> None:
        self._end_record("stopped", discard=discard)

    @property
    def recording(self) -> bool:
        return self._recorder is not None

    def stats(self) -> dict[str, Any]:
        """Quality figures of the stream (what FreeSWITCH puts in ``rtp_audio_in_*`` channel
        variables, for the leg's CDR and metrics)."""
        reception = self.in_stats
        return {
            "codec": self.codec,
            "remote": f"{self.remote[0]}:{self.remote[1]}" if self.remote else None,
            "packets_received": self.packets_received,
            "packets_sent": self.packets_sent,
            "packets_dropped": self.packets_dropped,
            "packets_lost": max(0, reception.lost) if reception else 0,
            "jitter_ms": round(reception.jitter / 8.0, 3) if reception else 0.0,
            "late_packets": self.jitter.late,
            "round_trip_ms": self.round_trip_ms,
            "remote_fraction_lost": self.remote_fraction_lost,
        }

    def close_now(self) -> list[MediaEvent]:
        """Close, and hand back this stream's undelivered events (the ``closed`` ends of what
        ran) instead of sending them to the owner: an owner that is going away takes care of
        them itself (a call leg storing the recording a hangup ended before it reports the
        call's end)."""
        self.close()
        mine = [event for stream, event in self.engine._events if stream is self]
        self.engine._events = [(s, e) for s, e in self.engine._events if s is not self]
        return mine

    def close(self) -> None:
        """Stop everything (events with reason ``closed``), leave bridge and conference,
        release the port."""
        if self.closed:
            return
        self._end_output("closed")
        self._end_collect("closed")
        self._end_record("closed")
        if self.peer is not None:
            self.engine.unbridge(self)
        if self.conference is not None:
            self.conference.leave(self)
        if self._rtcp_sock is not None and self.remote is not None:
            self._send_rtcp(time.monotonic(), bye=True)
        self.closed = True
        self._watcher.stop()
        self.engine._forget(self)
        self._sock.close()
        if self._rtcp_sock is not None:
            if self._rtcp_watcher is not None:
                self._rtcp_watcher.stop()
            self._rtcp_sock.close()

    # -- internals: operations ------------------------------------------------------------

    def _start_output(self, make: Callable[[int], Any]) -> int:
        self._end_output("stopped")
        op = next(self._op_ids)
        self._output = make(op)
        self.engine._activate(self)
        return op

    def _end_output(self, reason: str, digit: str | None = None) -> None:
        output = self._output
        if output is None:
            return
        self._output = None
        self._emit(PlaybackFinished(self.id, output.op_id, output.kind, reason, digit))

    def _end_collect(self, reason: str, terminator: str | None = None) -> None:
        collector = self._collector
        if collector is None:
            return
        self._collector = None
        self._emit(DigitsCollected(self.id, collector.op_id, collector.digits, reason,
                                   terminator))

    def _end_record(self, reason: str, digit: str | None = None, *,
                    discard: bool = False) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        self._recorder = None
        writer = recorder.writer
        if recorder.pending_silence and not discard:
            # Ended for another reason than silence: the quiet tail is part of the recording.
            limit = recorder.max_samples
            tail = np.concatenate(recorder.pending_silence)
            if limit is not None:
                tail = tail[: max(0, limit - writer.samples)]
            writer.write(tail)
        if discard:
            writer.discard()
        else:
            writer.close()
        self._emit(RecordingFinished(self.id, recorder.op_id, writer.path, writer.seconds,
                                     reason, digit, discard))

    def _emit(self, event: MediaEvent) -> None:
        self.engine._queue_event(self, event)

    def _on_digit(self, digit: str, duration: int, now: float) -> None:
        self._emit(DtmfReceived(self.id, digit, duration // 8))
        output = self._output
        stopped_output = False
        if output is not None and digit in output.terminators:
            self._end_output("terminator", digit)
            stopped_output = True
        recorder = self._recorder
        if recorder is not None and digit in recorder.terminators:
            self._end_record("terminator", digit)
            return  # the digit that ends a recording is not an answer to anything
        if self._collector is not None:
            self._collect(digit, now)
        elif stopped_output or len(self._digits) < (self._digits.maxlen or 32):
            self._digits.append(digit)

    def _collect(self, digit: str, now: float) -> None:
        collector = self._collector
        assert collector is not None
        if digit in collector.terminators:
            self._end_collect("terminator", digit)
            return
        collector.digits += digit
        if len(collector.digits) >= collector.max_digits:
            self._end_collect("max_digits")
            return
        collector.deadline = now + collector.inter_digit_timeout

    # -- internals: receiving (io watcher callback, in the hub) ---------------------------

    def _on_readable(self) -> None:
        # One datagram per callback: libev's watchers are level-triggered, so a port with more
        # queued is called again in the same loop iteration, and a stream at 50 packets/s
        # almost never has two waiting; reading until EAGAIN would cost every packet a
        # second, failing system call. It also keeps one flooded port from starving others.
        try:
            data, source = self._sock.recvfrom(2048)
        except OSError:
            # EAGAIN (spurious wake-up), an ICMP port unreachable from an earlier send, or
            # the socket closed under us: nothing to read this time.
            return
        try:
            self._on_datagram(data, source)
        except Exception:  # one bad packet or bug must not stop the watcher
            log.exception("media stream %s: packet handling failed", self.id)

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            self.packets_dropped += 1
            return
        if 192 <= data[1] <= 223:  # is_rtcp, inlined: this runs for every packet
            self._on_rtcp(data, source)  # RTCP muxed on the RTP port (RFC 5761)
            return
        address = source if len(source) == 2 else (source[0], source[1])
        if address != self.remote:
            if address == self._sdp_remote:
                # The address the SDP gave is always good: a packet from it undoes a latch
                # onto a stray packet (e.g. from the old far end, still queued at a re-INVITE).
                self.remote = address
                self._latched = True
                self._emit(RemoteLatched(self.id, address))
            elif self.latch and not self._latched:
                self.remote = address
                self._latched = True
                self._emit(RemoteLatched(self.id, address))
            elif self.remote is not None:
                self.packets_dropped += 1
                return
            else:
                self.remote = address
        elif self.latch:
            self._latched = True
        now = time.monotonic()
        self._last_rx = now
        self._timed_out = False
        self.packets_received += 1
        _, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        payload_type = second & 0x7F
        if ssrc != self._in_ssrc:
            self._in_ssrc = ssrc
            self.in_stats = ReceptionStats()
        assert self.in_stats is not None
        self.in_stats.update(seq, ts, now)
        peer = self.peer
        if payload_type == self.telephone_event_pt:
            try:
                packet = parse_rtp(data)
            except RtpError:
                return
            for digit in self._dtmf.receive(packet.payload, ts, packet.marker, now):
                self._on_digit(digit.digit, digit.duration, now)
            if peer is not None and peer.telephone_event_pt is not None:
                peer._relay(data, ssrc, seq, ts, peer.telephone_event_pt, None, now)
            return
        if peer is not None:
            peer._relay(data, ssrc, seq, ts, peer.payload_type,
                        self.codec if self.codec != peer.codec else None, now)
        if self._wants_inbound_audio:
            try:
                packet = parse_rtp(data)
            except RtpError:
                return
            self.jitter.push(seq, ts, packet.payload, now, payload_type)

    # -- internals: RTCP (RFC 3550 section 6) ---------------------------------------------

    def _on_rtcp_readable(self) -> None:
        try:
            data, source = self._rtcp_sock.recvfrom(2048)
        except OSError:
            return
        try:
            self._on_rtcp(data, source)
        except Exception:
            log.exception("media stream %s: RTCP handling failed", self.id)

    def _on_rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        """Take what the far end's reports say: its SR (for our next report's LSR/DLSR) and
        its report on us (round-trip time, the loss it sees)."""
        if self.remote is not None and source[0] != self.remote[0]:
            return  # not from the far end's host
        try:
            packets = parse_rtcp(data)
        except RtpError:
            return
        now = time.monotonic()
        self._rtcp_remote = (source[0], source[1])
        for packet in packets:
            if isinstance(packet, RtcpSenderReport | RtcpReceiverReport):
                if isinstance(packet, RtcpSenderReport) and packet.ssrc == self._in_ssrc:
                    self._last_sr = ((packet.ntp_timestamp >> 16) & 0xFFFFFFFF, now)
                for block in packet.reports:
                    if block.ssrc != self.ssrc:
                        continue
                    self.remote_fraction_lost = block.fraction_lost / 256
                    if block.last_sr:
                        # RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                        arrival = (_ntp_now() >> 16) & 0xFFFFFFFF
                        rtt = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
                        if rtt < 0x80000000:
                            self.round_trip_ms = round(rtt * 1000 / 65536, 3)

    def _send_rtcp(self, now: float, *, bye: bool = False) -> None:
        """A compound report: SR when we sent since the last one (else RR), a report block
        on what we receive, our SDES CNAME, and BYE when the stream closes."""
        sock = self._rtcp_sock
        if sock is None or self.remote is None or not self.sending:
            return
        blocks: tuple[ReportBlock, ...] = ()
        reception = self.in_stats
        if reception is not None and self._in_ssrc is not None and reception.received:
            lsr, dlsr = 0, 0
            if self._last_sr is not None:
                lsr = self._last_sr[0]
                dlsr = int((now - self._last_sr[1]) * 65536)
            blocks = (ReportBlock(
                self._in_ssrc, reception.fraction_lost(),
                max(-0x800000, min(0x7FFFFF, reception.lost)),
                reception.extended_max_seq & 0xFFFFFFFF, int(reception.jitter), lsr, dlsr),)
        report: RtcpPacket
        if self.packets_sent:
            report = RtcpSenderReport(self.ssrc, _ntp_now(), self._out_ts, self.packets_sent,
                                      self._octets_sent, blocks)
        else:
            report = RtcpReceiverReport(self.ssrc, blocks)
        packets: list[RtcpPacket] = [report, _sdes_cname(self.ssrc, self.engine.cname)]
        if bye:
            packets.append(RtcpBye((self.ssrc,)))
        target = self._rtcp_remote or (
            self.remote[0], self._sdp_rtcp_port or self.remote[1] + 1)
        try:
            sock.sendto(build_rtcp(packets), target)
        except OSError:
            pass

    def _relay(self, data: bytes, ssrc: int, seq: int, ts: int, payload_type: int,
               transcode_from: str | None, now: float) -> None:
        """Send a packet the bridged peer received, as ours: our SSRC, sequence numbers and
        timestamps continuing ours (RFC 3550 7: a translator rewriting the source)."""
        if self._output is not None or self.remote is None or self.closed:
            return  # a prompt or tone to this side takes precedence over the other side
        mapping = self._relay_map
        if mapping is None or mapping[0] != ssrc or self._out_source is not mapping:
            # A new source (or our own frames in between): continue our numbering from here.
            elapsed = 0 if self._out_time is None else int((now - self._out_time) * 8000)
            mapping = (ssrc, (self._out_seq + 1 - seq) & 0xFFFF,
                       (self._out_ts + max(SAMPLES_PER_FRAME, elapsed) - ts) & 0xFFFFFFFF)
            self._relay_map = mapping
            self._out_source = mapping
            marker = 0x80
        else:
            marker = data[1] & 0x80
        out_seq = (seq + mapping[1]) & 0xFFFF
        out_ts = (ts + mapping[2]) & 0xFFFFFFFF
        header = _HEADER.pack(data[0], marker | payload_type, out_seq, out_ts, self.ssrc)
        if transcode_from is None:
            packet = header + data[12:]
        else:
            try:
                parsed = parse_rtp(data)
            except RtpError:
                return
            pcm = decode(transcode_from, parsed.payload)
            packet = _HEADER.pack(0x80, marker | payload_type, out_seq, out_ts, self.ssrc) \
                + encode(self.codec, pcm)
        if seq_delta(out_seq, self._out_seq) > 0:
            self._out_seq = out_seq
        if ts_delta(out_ts, self._out_ts) > 0:
            self._out_ts = out_ts
        self._out_time = now
        self._send(packet)

    def _send(self, packet: bytes) -> None:
        if not self.sending:
            return
        try:
            self._sock.sendto(packet, self.remote)
            self.packets_sent += 1
            self._octets_sent += len(packet) - 12
        except (BlockingIOError, OSError):
            self.packets_dropped += 1  # UDP: a full buffer or an ICMP error drops the packet

    def _send_frame(self, payload: bytes, payload_type: int, *, timestamp: int | None = None,
                    marker: bool = False, advance: int = SAMPLES_PER_FRAME,
                    now: float) -> None:
        """Send one packet we produced (prompt, tone, mix, DTMF)."""
        if self.remote is None:
            return
        if self._out_source is not self:
            # Switching from relayed packets to our own: a new talkspurt at wall-clock time.
            elapsed = 0 if self._out_time is None else int((now - self._out_time) * 8000)
            self._out_ts = (self._out_ts + max(SAMPLES_PER_FRAME, elapsed)) & 0xFFFFFFFF
            self._out_source = self
            marker = True
        else:
            self._out_ts = (self._out_ts + advance) & 0xFFFFFFFF
        self._out_seq = (self._out_seq + 1) & 0xFFFF
        ts = self._out_ts if timestamp is None else timestamp
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, self._out_seq,
                              ts, self.ssrc)
        self._out_time = now
        self._send(header + payload)

    # -- internals: the clock -------------------------------------------------------------

    def _needs_tick(self) -> bool:
        return (self._output is not None or self._collector is not None
                or self._recorder is not None or self.conference is not None
                or self._inband is not None
                or self._dtmf._current is not None or self.rtp_timeout is not None)

    def _tick_in(self, now: float) -> None:
        """Inbound half of a tick: timeouts, the jitter buffer frame for recorder/mixer."""
        for digit in self._dtmf.poll(now):
            self._on_digit(digit.digit, digit.duration, now)
        collector = self._collector
        if collector is not None and now >= collector.deadline:
            self._end_collect("timeout")
        if (self.rtp_timeout is not None and not self._timed_out
                and now - self._last_rx >= self.rtp_timeout):
            self._timed_out = True
            self._emit(MediaTimeout(self.id, self.rtp_timeout))
        if self._recorder is None and self.conference is None and self._inband is None:
            return
        pcm = self._inbound_frame()
        if self._inband is not None:
            for key in self._inband.feed(pcm):
                self._on_digit(key, 40 * 8, now)  # known to have lasted >= 40 ms
        recorder = self._recorder
        if recorder is not None:
            peer = self.peer
            if recorder.both_directions and peer is not None:
                # Both parties of the bridge, mixed: what the far end says and what we relay
                # to it (the peer's inbound audio).
                mixed = pcm.astype(np.int32) + peer._inbound_frame().astype(np.int32)
                pcm = np.clip(mixed, -32768, 32767).astype(np.int16)
            self._record_frame(recorder, pcm)

    def _inbound_frame(self) -> Pcm:
        """This tick's frame of what the far end sends (decoded, silence when nothing came in
        time); taken from the jitter buffer once per tick however many readers want it."""
        tick = self.engine.ticks
        if self._frame_tick == tick:
            return self._last_in
        self._frame_tick = tick
        # Packets need not hold 20 ms (a far end with ptime 30 or 10): decoded samples queue
        # here and each tick takes 160 of them, pulling packets as needed.
        backlog = self._backlog
        while len(backlog) < SAMPLES_PER_FRAME:
            frame = self.jitter.pop()
            if frame is None:
                break  # nothing (prefilling or dry): the rest of this frame is silence
            if frame.payload is None:
                # Lost: silence as long as the packets around it.
                samples = _SILENCE[: self._packet_samples]
            else:
                codec = _STATIC_PAYLOAD_TYPES.get(frame.payload_type or 0, self.codec)
                if frame.payload_type == self.payload_type:
                    codec = self.codec
                samples = decode(codec, frame.payload)
                if len(samples):
                    self._packet_samples = min(len(samples), SAMPLES_PER_FRAME)
            backlog = np.concatenate([backlog, samples]) if len(backlog) else samples
        if len(backlog) >= SAMPLES_PER_FRAME:
            pcm, self._backlog = backlog[:SAMPLES_PER_FRAME], backlog[SAMPLES_PER_FRAME:]
        else:
            pcm = np.concatenate([backlog, _SILENCE[: SAMPLES_PER_FRAME - len(backlog)]])
            self._backlog = _SILENCE[:0]
        self._last_in = pcm
        return pcm

    def _reset_inbound(self) -> None:
        self.jitter.reset()
        self._backlog = _SILENCE[:0]

    @property
    def _wants_inbound_audio(self) -> bool:
        """Whether packets must go through the jitter buffer (decoded audio is needed)."""
        if (self._recorder is not None or self.conference is not None
                or self._inband is not None):
            return True
        peer = self.peer
        return (peer is not None and peer._recorder is not None
                and peer._recorder.both_directions)

    def _record_frame(self, recorder: _Recorder, pcm: Pcm) -> None:
        if recorder.silence_frames_needed is not None:
            level = int(np.abs(pcm.astype(np.int32)).mean())
            if level < recorder.silence_threshold:
                recorder.pending_silence.append(pcm)
                if len(recorder.pending_silence) >= recorder.silence_frames_needed:
                    recorder.pending_silence.clear()
                    self._end_record("silence")
                return
            self._write_recording(recorder, recorder.pending_silence)
            recorder.pending_silence.clear()
        self._write_recording(recorder, [pcm])

    def _write_recording(self, recorder: _Recorder, chunks: list[Pcm]) -> None:
        limit = recorder.max_samples
        writer = recorder.writer
        for pcm in chunks:
            if limit is not None and writer.samples + len(pcm) > limit:
                pcm = pcm[: max(0, limit - writer.samples)]
            if len(pcm):
                writer.write(pcm)
            if limit is not None and writer.samples >= limit:
                self._end_record("time_limit")
                return

    def _tick_out(self, now: float) -> bool:
        """Outbound half: the next frame of what plays; True when it sent something."""
        output = self._output
        if output is None:
            return False
        if isinstance(output, _DtmfOut):
            return self._tick_dtmf(output, now)
        frame = output.next_frame()
        if frame is None:
            self._end_output("done")
            return False
        self._send_frame(encode(self.codec, frame), self.payload_type, now=now)
        return True

    def _tick_dtmf(self, output: _DtmfOut, now: float) -> bool:
        assert self.telephone_event_pt is not None
        if output.sender is None:
            if output.gap > 0:
                output.gap -= 1
                self._send_frame(encode(self.codec, _SILENCE), self.payload_type, now=now)
                return True
            if not output.digits:
                self._end_output("done")
                return False
            start = (self._out_ts + SAMPLES_PER_FRAME) & 0xFFFFFFFF
            output.sender = DtmfSender(output.digits.popleft(), start,
                                       duration_ms=output.duration_ms)
        sender = output.sender
        packet = sender.next_packet()
        if packet is None:  # cannot happen: a finished sender is dropped below
            output.sender = None
            return False
        # All packets of an event carry its start timestamp; the audio clock advances under it.
        self._send_frame(packet.payload, self.telephone_event_pt, timestamp=packet.timestamp,
                         marker=packet.marker, now=now)
        if sender.done:
            output.sender = None
            output.gap = output.gap_frames
        return True


# -- conference -------------------------------------------------------------------------------


class Conference:
    """Everyone hears everyone else: each member gets the sum of all members' audio minus
    their own, clipped to 16 bits (saturation, not wrap-around)."""

    def __init__(self, engine: MediaEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.members: list[MediaStream] = []
        self.muted: set[int] = set()  # stream ids heard by nobody
        self.deaf: set[int] = set()  # stream ids sent nothing

    def set_flags(self, stream: MediaStream, *, mute: bool | None = None,
                  deaf: bool | None = None) -> None:
        """Mute (the others stop hearing this member) or deafen (it stops hearing them)."""
        for flag, members in ((mute, self.muted), (deaf, self.deaf)):
            if flag is True:
                members.add(stream.id)
            elif flag is False:
                members.discard(stream.id)

    def join(self, stream: MediaStream) -> None:
        # A conference left empty is dropped from the engine; joining it again brings it back.
        self.engine._conferences.setdefault(self.name, self)
        if stream.peer is not None:
            raise ValueError("a bridged stream cannot join a conference; unbridge it first")
        if stream.conference is not None and stream.conference is not self:
            stream.conference.leave(stream)
        if stream not in self.members:
            self.members.append(stream)
            stream.conference = self
            stream._reset_inbound()
            self.engine._activate(stream)

    def leave(self, stream: MediaStream) -> None:
        if stream in self.members:
            self.members.remove(stream)
        if stream.conference is self:
            stream.conference = None
        self.muted.discard(stream.id)
        self.deaf.discard(stream.id)
        if not self.members:
            self.engine._conferences.pop(self.name, None)

    def mix(self, now: float) -> None:
        members = self.members
        if not members:
            return
        inputs = np.stack([m._last_in for m in members]).astype(np.int32)
        if self.muted:
            for index, member in enumerate(members):
                if member.id in self.muted:
                    inputs[index] = 0
        total = inputs.sum(axis=0)
        mixed = np.clip(total - inputs, -32768, 32767).astype(np.int16)
        for member, pcm in zip(members, mixed, strict=True):
            if member._output is None and member.id not in self.deaf:
                member._send_frame(encode(member.codec, pcm), member.payload_type, now=now)


# -- the engine -------------------------------------------------------------------------------


class MediaEngine:
    """The media of one process: RTP port range, streams, bridges, conferences, one clock.

    ``host`` is where the sockets bind; ``advertise`` the address put in SDP (defaults to
    ``host``, or 127.0.0.1 when binding to every interface).
    """

    def __init__(self, host: str = "127.0.0.1", port_min: int = 16384, port_max: int = 32767,
                 *, advertise: str | None = None, jitter_depth: int = 2,
                 rtcp_interval: float | None = 5.0) -> None:
        self.host = host
        # RTCP reports every rtcp_interval seconds on average (RFC 3550's 5 s minimum, spread
        # over 0.5-1.5 times it); None: no RTCP socket, no reports.
        self.rtcp_interval = rtcp_interval
        self.cname = f"mirliton@{host}"
        self.advertise = advertise or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.ports = PortAllocator(host, port_min, port_max)
        self.jitter_depth = jitter_depth
        self._streams: dict[int, MediaStream] = {}
        self._active: dict[int, MediaStream] = {}
        self._conferences: dict[str, Conference] = {}
        self._events: list[tuple[MediaStream, MediaEvent]] = []
        self._clock: gevent.Greenlet | None = None
        self._running = False
        self.ticks = 0
        self.late_ticks = 0  # ticks that started more than one frame after they were due
        # Packet counts of closed streams, and what was last reported to Prometheus.
        self._closed_counts = [0, 0, 0]
        self._reported = [0, 0, 0, 0]  # received, sent, dropped, late ticks
        self._next_report = 0.0
        self._next_rtcp_check = 0.0

    @classmethod
    def from_config(cls, media: Any) -> MediaEngine:
        """From the ``media`` section of mirliton's Config."""
        return cls(media.bind_address, media.rtp_port_min, media.rtp_port_max,
                   advertise=media.advertise_address or None)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> MediaEngine:
        if self._clock is None:
            self._running = True
            self._clock = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        self._running = False
        for stream in list(self._streams.values()):
            stream.close()
        self._deliver()
        self.report_metrics()
        if self._clock is not None:
            self._clock.kill(block=False)
            self._clock = None

    def __enter__(self) -> MediaEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- streams ----------------------------------------------------------------------------

    def open_stream(self, owner: Any = None, *, latch: bool = True,
                    rtp_timeout: float | None = None) -> MediaStream:
        """A stream on the next free even port; events go to ``owner``."""
        sock = self.ports.bind()
        rtcp_sock = None
        if self.rtcp_interval is not None:
            rtcp_sock = self.ports.bind_rtcp(sock.getsockname()[1])
        stream = MediaStream(self, sock, _as_owner(owner), latch=latch,
                             rtp_timeout=rtp_timeout, jitter_depth=self.jitter_depth,
                             rtcp_sock=rtcp_sock)
        if self.rtcp_interval is not None:
            stream._rtcp_due = time.monotonic() + self.rtcp_interval * random.uniform(0.5, 1.5)
        self._streams[stream.id] = stream
        if rtp_timeout is not None:
            self._activate(stream)
        return stream

    @property
    def streams(self) -> list[MediaStream]:
        return list(self._streams.values())

    def bridge(self, a: MediaStream, b: MediaStream) -> None:
        """Relay a's packets to b and b's to a (DTMF as RFC 4733, transcoding PCMU<->PCMA
        when the two sides differ)."""
        if a is b:
            raise ValueError("cannot bridge a stream to itself")
        for stream in (a, b):
            if stream.closed:
                raise ValueError(f"{stream} is closed")
            if stream.conference is not None:
                stream.conference.leave(stream)
            if stream.peer is not None and stream.peer not in (a, b):
                self.unbridge(stream)
        a.peer, b.peer = b, a

    def unbridge(self, stream: MediaStream) -> None:
        peer = stream.peer
        stream.peer = None
        if peer is not None and peer.peer is stream:
            peer.peer = None

    def conference(self, name: str) -> Conference:
        """The conference called ``name`` (created on first use, dropped when empty)."""
        conference = self._conferences.get(name)
        if conference is None:
            conference = self._conferences[name] = Conference(self, name)
        return conference

    # -- internals --------------------------------------------------------------------------

    def _activate(self, stream: MediaStream) -> None:
        self._active[stream.id] = stream

    def _forget(self, stream: MediaStream) -> None:
        counts = self._closed_counts
        counts[0] += stream.packets_received
        counts[1] += stream.packets_sent
        counts[2] += stream.packets_dropped
        self._streams.pop(stream.id, None)
        self._active.pop(stream.id, None)
        self.ports.release(stream.local_port)

    def _queue_event(self, stream: MediaStream, event: MediaEvent) -> None:
        self._events.append((stream, event))

    def _deliver(self) -> None:
        while self._events:
            events, self._events = self._events, []
            for stream, event in events:
                owner = stream._owner
                if owner is None:
                    continue
                try:
                    owner(event)
                except Exception:
                    log.exception("media event delivery to %s failed", owner)

    def _run(self) -> None:
        due = time.monotonic()
        while self._running:
            due += TICK
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            elif delay < -TICK:
                self.late_ticks += 1
                if delay < -10 * TICK:
                    due = time.monotonic()  # far behind (a paused process): do not burst
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("media clock tick failed")

    def tick(self, now: float) -> None:
        """One 20 ms frame for every stream that has periodic work (called by the clock;
        tests may call it directly)."""
        self.ticks += 1
        active = self._active
        idle: list[int] = []
        streams = list(active.values())
        for stream in streams:
            if stream.closed:
                idle.append(stream.id)
                continue
            stream._tick_in(now)
        for conference in list(self._conferences.values()):
            conference.mix(now)
        for stream in streams:
            if not stream.closed:
                stream._tick_out(now)
            if not stream._needs_tick():
                idle.append(stream.id)
        for stream_id in idle:
            active.pop(stream_id, None)
        self._deliver()
        if now >= self._next_report:
            self._next_report = now + 1.0
            self.report_metrics()
        if self.rtcp_interval is not None and now >= self._next_rtcp_check:
            # Reports are due every few seconds per stream: looking ten times a second is
            # plenty and keeps this off the 20 ms path.
            self._next_rtcp_check = now + min(0.1, self.rtcp_interval / 2)
            interval = self.rtcp_interval
            for stream in list(self._streams.values()):
                if now >= stream._rtcp_due and not stream.closed:
                    stream._rtcp_due = now + interval * random.uniform(0.5, 1.5)
                    stream._send_rtcp(now)

    def report_metrics(self) -> None:
        """Bring the Prometheus series up to date (the clock does it once a second)."""
        streams = self._streams.values()
        totals = [
            self._closed_counts[0] + sum(s.packets_received for s in streams),
            self._closed_counts[1] + sum(s.packets_sent for s in streams),
            self._closed_counts[2] + sum(s.packets_dropped for s in streams),
            self.late_ticks,
        ]
        reported = self._reported
        for index, direction in enumerate(("received", "sent", "dropped")):
            if totals[index] > reported[index]:
                MEDIA_PACKETS.labels(direction).inc(totals[index] - reported[index])
        if totals[3] > reported[3]:
            MEDIA_LATE_TICKS.inc(totals[3] - reported[3])
        self._reported = totals
        MEDIA_STREAMS.set(len(self._streams))
