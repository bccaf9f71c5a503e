"""A small SIP UAS for the media tests: answers INVITEs with an anchored media stream of the
engine, acknowledges BYE. Built from protocols.sip (transactions over a gevent UDP transport)
and protocols.sdp, the way a call leg will: the offer is answered with the stream's port
and the stream pointed at the far end in one step (``stream.answer_sdp(offer)``).

It is only the signalling a test needs; what happens on the media is the test's business:
``wait_call()`` gives the :class:`UasCall` with its stream and the media events its owner
(the call) received.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gevent
import gevent.queue

from actors.media import MediaEngine, MediaEvent, MediaStream
from protocols.sdp import NegotiationFailure
from protocols.sip import (
    AckReceived,
    RequestReceived,
    TransactionLayer,
    generate_tag,
    make_response,
)
from protocols.sip.transport import TransactionRunner, UdpTransport

__all__ = ["MediaUas", "UasCall"]


@dataclass
class UasCall:
    call_id: str
    stream: MediaStream
    events: list[MediaEvent] = field(default_factory=list)
    confirmed: bool = False
    ended: bool = False

    def send(self, event: MediaEvent) -> None:  # the stream's owner: events land here
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class MediaUas:
    def __init__(self, engine: MediaEngine, host: str = "127.0.0.1") -> None:
        self.engine = engine
        self.runner = TransactionRunner(TransactionLayer(), self._on_event)
        self.udp = UdpTransport(host, 0, self.runner.on_message,
                                on_parse_error=self.runner.on_parse_error).start()
        self.runner.add_transport(self.udp)
        self.runner.start()
        self.calls: dict[str, UasCall] = {}
        self._new_calls: gevent.queue.Queue[UasCall] = gevent.queue.Queue()

    @property
    def uri(self) -> str:
        host, port = self.udp.local_address
        return f"sip:media@{host}:{port}"

    def wait_call(self, timeout: float = 10.0) -> UasCall:
        return self._new_calls.get(timeout=timeout)

    def close(self) -> None:
        for call in self.calls.values():
            call.stream.close()
        self.runner.stop()
        self.udp.close()

    def _on_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "INVITE":
                self._invite(event)
            elif request.method == "BYE":
                self.runner.respond(event.transaction, make_response(request, 200))
                call = self.calls.get(request.call_id)
                if call is not None:
                    call.ended = True
                    call.stream.close()
            else:
                self.runner.respond(event.transaction, make_response(request, 200))
        elif isinstance(event, AckReceived):
            call = self.calls.get(event.request.call_id)
            if call is not None and not call.confirmed:
                call.confirmed = True
                self._new_calls.put(call)

    def _invite(self, event: RequestReceived) -> None:
        request = event.request
        if request.call_id in self.calls:
            return  # a re-INVITE: not needed by these tests
        placeholder = UasCall(request.call_id, stream=None)  # type: ignore[arg-type]
        stream = self.engine.open_stream(placeholder)
        placeholder.stream = stream
        answer = stream.answer_sdp(request.body)
        if isinstance(answer, NegotiationFailure):
            stream.close()
            self.runner.respond(event.transaction, make_response(request, answer.status))
            return
        self.calls[request.call_id] = placeholder
        response = make_response(request, 200, to_tag=generate_tag(), body=answer.sdp.to_bytes())
        host, port = self.udp.local_address
        response.headers.add("Contact", f"<sip:media@{host}:{port}>")
        response.headers.add("Content-Type", "application/sdp")
        self.runner.respond(event.transaction, response)
