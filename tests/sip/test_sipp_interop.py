"""Interop with a real SIP peer: SIPp's built-in ``uas`` scenario, over UDP and TCP.

Our side is the UAC, built from the pieces the edge and call legs use: gevent transport
adapters, the sans-I/O transaction layer (driven by TransactionRunner) and a dialog. SIPp runs
with ``-m 1`` for the call test, so its exit status says whether it counted the call as
successful; it always gets ``-nostdin`` and a global ``-timeout``, and is killed in teardown.
"""

from __future__ import annotations

import shutil
import socket as stdlib_socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent.queue import Empty, Queue

from protocols.sdp import LocalMedia, NegotiationFailure, build_offer, parse_sdp, process_answer
from protocols.sip.dialog import Dialog, next_hop
from protocols.sip.message import Request, Response, generate_call_id, generate_tag
from protocols.sip.transaction import (
    Event,
    ResponseReceived,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    new_via,
)
from protocols.sip.transport import SipTransport, TcpTransport, TransactionRunner, UdpTransport

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

LOOPBACK = "127.0.0.1"


def free_port(kind: int) -> int:
    """A currently free loopback port for SIPp (UDP and TCP probed separately)."""
    with stdlib_socket.socket(stdlib_socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class SippProcess:
    def __init__(self, args: list[str], workdir: Path) -> None:
        self.log_path = workdir / "sipp.out"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait(self, timeout: float) -> int:
        """Wait without blocking the gevent hub (our transports run in it)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"SIPp still running after {timeout}s:\n{self.output()}")
            gevent.sleep(0.05)
        return self.process.returncode

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()


def start_sipp(workdir: Path, transport: str, *extra: str) -> tuple[SippProcess, int]:
    port = free_port(stdlib_socket.SOCK_DGRAM if transport == "UDP" else stdlib_socket.SOCK_STREAM)
    args = ["sipp", "-sn", "uas", "-i", LOOPBACK, "-p", str(port), "-nostdin", "-timeout", "20s"]
    if transport == "TCP":
        args += ["-t", "t1"]
    sipp = SippProcess([*args, *extra], workdir)
    # Wait until SIPp's socket is bound (a TCP connect succeeds / the UDP port is taken).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sipp.process.poll() is not None:
            raise RuntimeError(f"SIPp exited early:\n{sipp.output()}")
        kind = stdlib_socket.SOCK_DGRAM if transport == "UDP" else stdlib_socket.SOCK_STREAM
        with stdlib_socket.socket(stdlib_socket.AF_INET, kind) as probe:
            if transport == "UDP":
                try:
                    probe.bind((LOOPBACK, port))
                except OSError:
                    return sipp, port
            elif probe.connect_ex((LOOPBACK, port)) == 0:
                return sipp, port
        time.sleep(0.05)
    sipp.kill()
    raise RuntimeError("SIPp did not bind its port")


class Uac:
    """A minimal UAC: transports + runner + an event queue the test reads from."""

    def __init__(self, transport_name: str) -> None:
        self.events: Queue[Event] = Queue()
        self.runner = TransactionRunner(TransactionLayer(), self.events.put)
        self.transport: SipTransport
        if transport_name == "UDP":
            self.transport = UdpTransport(LOOPBACK, 0, self.runner.on_message).start()
        else:
            self.transport = TcpTransport(LOOPBACK, 0, self.runner.on_message).start()
        self.runner.add_transport(self.transport)
        self.runner.start()
        self.host, self.port = self.transport.local_address
        self.name = transport_name

    def close(self) -> None:
        self.runner.stop()
        self.transport.close()

    def new_request(self, method: str, target: str, *, body: bytes = b"") -> Request:
        request = Request(method, target)
        headers = request.headers
        headers.add("Via", new_via(self.name, self.host, self.port))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:mirliton@{self.host}>;tag={generate_tag()}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", generate_call_id(self.host))
        headers.add("CSeq", f"1 {method}")
        transport_param = ";transport=tcp" if self.name == "TCP" else ""
        headers.add("Contact", f"<sip:mirliton@{self.host}:{self.port}{transport_param}>")
        headers.add("User-Agent", "mirliton-test")
        if body:
            headers.add("Content-Type", "application/sdp")
            request.body = body
        return request

    def next_response(self, timeout: float = 5.0) -> Response:
        """The next response event; transaction failures fail the test with their reason."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, remaining))
            except Empty:
                raise AssertionError("no response from SIPp") from None
            if isinstance(event, ResponseReceived):
                return event.response
            if isinstance(event, TransactionTimeout | TransportError):
                raise AssertionError(f"transaction failed: {event}")


@pytest.fixture(params=["UDP", "TCP"])
def transport_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def uac(transport_name: str) -> Iterator[Uac]:
    client = Uac(transport_name)
    yield client
    client.close()


def test_options_answered_by_sipp(uac: Uac, tmp_path: Path) -> None:
    # -aa: SIPp answers OPTIONS (and INFO, NOTIFY, UPDATE) with 200 outside its scenario.
    sipp, port = start_sipp(tmp_path, uac.name, "-aa")
    try:
        target = f"sip:service@{LOOPBACK}:{port}"
        options = uac.new_request("OPTIONS", target)
        uac.runner.send_request(options, (LOOPBACK, port), uac.name)
        response = uac.next_response()
        assert response.status == 200, sipp.output()
        assert response.call_id == options.call_id
        assert response.cseq.method == "OPTIONS"
    finally:
        sipp.kill()


def test_invite_200_ack_bye_call_with_sipp(uac: Uac, tmp_path: Path) -> None:
    sipp, port = start_sipp(tmp_path, uac.name, "-m", "1")
    try:
        target = f"sip:service@{LOOPBACK}:{port}"
        offer = build_offer(LocalMedia(address=LOOPBACK, audio_port=40000))
        invite = uac.new_request("INVITE", target, body=offer.to_bytes())
        uac.runner.send_request(invite, (LOOPBACK, port), uac.name)

        ringing = uac.next_response()
        assert ringing.status == 180, sipp.output()
        early = Dialog.create_uac(invite, ringing, transport=uac.name)
        ok = uac.next_response()
        assert ok.status == 200
        early.update_from_dialog_response(ok)
        dialog = early
        assert dialog.remote_target.port == port

        # SIPp answers with PCMU: offer/answer agrees on it.
        streams = process_answer(offer, parse_sdp(ok.body))
        assert not isinstance(streams, NegotiationFailure), streams
        assert streams[0].codec.encoding == "PCMU"

        ack = dialog.create_ack(invite, via=new_via(uac.name, uac.host, uac.port))
        destination, transport = next_hop(ack, default_transport=uac.name)
        uac.runner.send_stateless(ack, destination, transport)

        gevent.sleep(0.2)  # let SIPp move on to waiting for BYE
        bye = dialog.create_request("BYE", via=new_via(uac.name, uac.host, uac.port))
        destination, transport = next_hop(bye, default_transport=uac.name)
        assert destination == (LOOPBACK, port)
        uac.runner.send_request(bye, destination, transport)
        bye_response = uac.next_response()
        assert bye_response.status == 200
        dialog.receive_response(bye, bye_response)
        assert dialog.terminated

        # SIPp exits 0 only when its one call went through the whole scenario.
        assert sipp.wait(15) == 0, sipp.output()
    finally:
        sipp.kill()
