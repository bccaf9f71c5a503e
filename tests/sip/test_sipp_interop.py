"""The gevent transport adapters, on loopback and against a real SIP peer (SIPp).

The SIPp tests use SIPp's built-in ``uas`` (our side is the UAC) and ``uac`` (our side is the
UAS) scenarios over UDP and TCP, with the pieces the edge and call legs use: transport
adapters, the sans-I/O transaction layer driven by TransactionRunner, dialogs and SDP
offer/answer. Call tests run SIPp with ``-m 1``, so its exit status says whether it counted the
call as successful; SIPp always gets ``-nostdin`` and a global ``-timeout`` and is killed in
teardown.
"""

from __future__ import annotations

import shutil
import socket as stdlib_socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest
from gevent import socket as gevent_socket
from gevent.queue import Empty, Queue

from protocols.sdp import (
    Answer,
    LocalMedia,
    NegotiationFailure,
    build_answer,
    build_offer,
    parse_sdp,
    process_answer,
)
from protocols.sip.dialog import Dialog, Dialogs, next_hop
from protocols.sip.digest import DigestClient, DigestServer, retry_with_credentials
from protocols.sip.errors import SipParseError
from protocols.sip.message import (
    Message,
    Request,
    Response,
    generate_call_id,
    generate_tag,
    make_response,
)
from protocols.sip.transaction import (
    AckReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    new_via,
)
from protocols.sip.transport import (
    SipTransport,
    TcpTransport,
    TransactionRunner,
    UdpTransport,
)


def requires_sipp(test: Callable[..., None]) -> Callable[..., None]:
    marked = pytest.mark.sipp(test)
    return pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp not installed")(marked)


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
    """SIPp's built-in UAS on a free loopback port, once it is listening."""
    port = free_port(stdlib_socket.SOCK_DGRAM if transport == "UDP" else stdlib_socket.SOCK_STREAM)
    args = ["sipp", "-sn", "uas", "-i", LOOPBACK, "-p", str(port), "-nostdin", "-timeout", "20s"]
    if transport == "TCP":
        args += ["-t", "t1"]
    sipp = SippProcess([*args, *extra], workdir)
    wait_for_port(sipp, transport, port)
    return sipp, port


def wait_for_port(sipp: SippProcess, transport: str, port: int) -> None:
    """Wait until SIPp's socket is bound (a TCP connect succeeds / the UDP port is taken)."""
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
                    return
            elif probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    sipp.kill()
    raise RuntimeError("SIPp did not bind its port")


class Endpoint:
    """A minimal SIP endpoint: one transport + runner + an event queue the test reads from."""

    def __init__(self, transport_name: str, timers: TimerConfig | None = None) -> None:
        self.events: Queue[Event] = Queue()
        self.runner = TransactionRunner(TransactionLayer(timers), self.events.put)
        self.transport: SipTransport
        on_message, on_parse_error = self.runner.on_message, self.runner.on_parse_error
        if transport_name == "UDP":
            self.transport = UdpTransport(
                LOOPBACK, 0, on_message, on_parse_error=on_parse_error
            ).start()
        else:
            self.transport = TcpTransport(
                LOOPBACK, 0, on_message, on_parse_error=on_parse_error
            ).start()
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

    def next_event(self, *kinds: type, timeout: float = 5.0) -> Event:
        """The next event of one of ``kinds``; transaction failures fail the test."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, remaining))
            except Empty:
                raise AssertionError(f"no {kinds} event in {timeout}s") from None
            if any(isinstance(event, kind) for kind in kinds):
                return event
            if isinstance(event, TransactionTimeout | TransportError):
                raise AssertionError(f"transaction failed: {event}")

    def next_response(self, timeout: float = 5.0) -> Response:
        event = self.next_event(ResponseReceived, timeout=timeout)
        assert isinstance(event, ResponseReceived)
        return event.response

    def next_request(self, timeout: float = 10.0) -> RequestReceived:
        event = self.next_event(RequestReceived, timeout=timeout)
        assert isinstance(event, RequestReceived)
        return event


@pytest.fixture(params=["UDP", "TCP"])
def transport_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def uac(transport_name: str) -> Iterator[Endpoint]:
    client = Endpoint(transport_name)
    yield client
    client.close()


@requires_sipp
def test_options_answered_by_sipp(uac: Endpoint, tmp_path: Path) -> None:
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


@requires_sipp
def test_invite_200_ack_bye_call_with_sipp(uac: Endpoint, tmp_path: Path) -> None:
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
        destination, transport = dialog.next_hop(default_transport=uac.name)
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


@requires_sipp
def test_sipp_uac_calls_us_as_uas(uac: Endpoint, tmp_path: Path) -> None:
    """SIPp's ``uac`` places one call to us: INVITE, our 180 and 200 (with an SDP answer), its
    ACK, its BYE and our 200. Server transactions, UAS dialog and offer/answer together."""
    ours = uac
    sipp_port = free_port(
        stdlib_socket.SOCK_DGRAM if ours.name == "UDP" else stdlib_socket.SOCK_STREAM
    )
    args = [
        "sipp", "-sn", "uac", f"{LOOPBACK}:{ours.port}", "-i", LOOPBACK, "-p", str(sipp_port),
        "-m", "1", "-d", "100", "-nostdin", "-timeout", "20s",
    ]  # fmt: skip
    if ours.name == "TCP":
        args += ["-t", "t1"]
    sipp = SippProcess(args, tmp_path)
    try:
        received = ours.next_request()
        invite = received.request
        assert invite.method == "INVITE", sipp.output()
        offer = parse_sdp(invite.body)
        answer = build_answer(offer, LocalMedia(address=LOOPBACK, audio_port=40002))
        assert isinstance(answer, Answer), answer
        assert answer.streams[0].codec.encoding == "PCMU"

        tag = generate_tag()
        contact = f"<sip:uas@{ours.host}:{ours.port}>"
        ours.runner.respond(received.transaction, make_response(invite, 180, to_tag=tag))
        ok = make_response(invite, 200, to_tag=tag)
        ok.headers.add("Contact", contact)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = answer.sdp.to_bytes()
        ours.runner.respond(received.transaction, ok)
        dialog = Dialog.create_uas(invite, ok, transport=ours.name)

        ack = ours.next_event(AckReceived)
        assert isinstance(ack, AckReceived)
        assert dialog.matches_request(ack.request)
        assert dialog.receive_request(ack.request) is None

        bye = ours.next_request()
        assert bye.request.method == "BYE"
        assert dialog.matches_request(bye.request)
        assert dialog.receive_request(bye.request) is None
        ours.runner.respond(bye.transaction, make_response(bye.request, 200))
        assert dialog.terminated
        assert sipp.wait(15) == 0, sipp.output()
    finally:
        sipp.kill()


# SIPp as a digest registrar: 401 challenge, then <verifyauth> against a fixed user, so our
# client digest is checked by an independent implementation. 200 when valid, 403 otherwise.
DIGEST_REGISTRAR_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="digest registrar">
  <recv request="REGISTER"/>
  <send>
    <![CDATA[

      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="example.com", nonce="[pid]n[call_number]", qop="auth", algorithm=MD5
      Content-Length: 0

    ]]>
  </send>
  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="authvalid" username="1000" password="secret1000"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="goodauth"/>
  <send next="done">
    <![CDATA[

      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="goodauth"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Contact:];expires=600
      Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
</scenario>
"""


@requires_sipp
@pytest.mark.parametrize(("password", "expected"), [("secret1000", 200), ("wrong", 403)])
def test_register_with_digest_to_sipp_registrar(
    uac: Endpoint, tmp_path: Path, password: str, expected: int
) -> None:
    scenario = tmp_path / "digest_registrar.xml"
    scenario.write_text(DIGEST_REGISTRAR_XML)
    sipp_port = free_port(
        stdlib_socket.SOCK_DGRAM if uac.name == "UDP" else stdlib_socket.SOCK_STREAM
    )
    args = ["sipp", "-sf", str(scenario), "-i", LOOPBACK, "-p", str(sipp_port)]
    args += ["-m", "1", "-nostdin", "-timeout", "20s"]
    if uac.name == "TCP":
        args += ["-t", "t1"]
    sipp = SippProcess(args, tmp_path)
    try:
        wait_for_port(sipp, uac.name, sipp_port)
        register = uac.new_request("REGISTER", "sip:example.com")
        register.headers.replace("From", f"<sip:1000@example.com>;tag={generate_tag()}")
        register.headers.replace("To", "<sip:1000@example.com>")
        register.headers.add("Expires", "600")
        destination = (LOOPBACK, sipp_port)
        uac.runner.send_request(register, destination, uac.name)
        challenge = uac.next_response()
        assert challenge.status == 401, sipp.output()
        retry = retry_with_credentials(register, challenge, DigestClient("1000", password))
        uac.runner.send_request(retry, destination, uac.name)
        final = uac.next_response()
        assert final.status == expected, sipp.output()
    finally:
        sipp.kill()


# SIPp as a digest client (-au/-ap, [authentication]): REGISTER, our 401, REGISTER with
# credentials, our 200. SIPp exits 0 only if it got the 200. SIPp puts
# sip:<remote_ip>:<remote_port> in the digest uri whatever the Request-URI, so the scenario
# uses that Request-URI and the server can check uri = Request-URI.
DIGEST_CLIENT_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="digest register client">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:1000@example.com>;tag=[pid]SIPpTag00[call_number]
      To: <sip:1000@example.com>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:1000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:1000@example.com>;tag=[pid]SIPpTag00[call_number]
      To: <sip:1000@example.com>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:1000@[local_ip]:[local_port]>
      [authentication]
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@requires_sipp
def test_digest_server_verifies_sipp_credentials(uac: Endpoint, tmp_path: Path) -> None:
    ours = uac
    scenario = tmp_path / "digest_client.xml"
    scenario.write_text(DIGEST_CLIENT_XML)
    sipp_port = free_port(
        stdlib_socket.SOCK_DGRAM if ours.name == "UDP" else stdlib_socket.SOCK_STREAM
    )
    args = ["sipp", "-sf", str(scenario), f"{LOOPBACK}:{ours.port}", "-i", LOOPBACK]
    args += ["-p", str(sipp_port), "-au", "1000", "-ap", "secret1000", "-m", "1"]
    args += ["-default_behaviors", "none", "-nostdin", "-timeout", "20s"]
    if ours.name == "TCP":
        args += ["-t", "t1"]
    # SIPp 3.6 computes MD5 digests; offering only MD5 keeps it on what it implements.
    digest_server = DigestServer(b"interop secret", algorithms=("MD5",))
    sipp = SippProcess(args, tmp_path)
    try:
        first = ours.next_request()
        assert first.request.method == "REGISTER", sipp.output()
        assert first.request.headers.get("Authorization") is None
        challenge = make_response(first.request, 401, to_tag=generate_tag())
        for name, value in digest_server.challenge_headers("example.com", time.time()):
            challenge.headers.add(name, value)
        ours.runner.respond(first.transaction, challenge)

        second = ours.next_request()
        credentials = second.request.headers.get("Authorization")
        assert credentials is not None, sipp.output()
        verdict = digest_server.verify(
            credentials,
            method="REGISTER",
            now=time.time(),
            password="secret1000",
            realm="example.com",
            request_uri=str(second.request.uri),
        )
        assert verdict.ok, (verdict, credentials)
        assert verdict.username == "1000"
        ours.runner.respond(
            second.transaction, make_response(second.request, 200, to_tag=generate_tag())
        )
        assert sipp.wait(15) == 0, sipp.output()
    finally:
        sipp.kill()


# -- transport adapters on loopback, no SIPp --------------------------------------------------

OPTIONS = (
    b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-loop-1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\n"
    b"To: <sip:probe@127.0.0.1>\r\n"
    b"Call-ID: loop-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class Collector:
    """An ``on_message``/``on_parse_error`` pair that queues what the transport delivers."""

    def __init__(self) -> None:
        self.messages: Queue[tuple[Message, tuple[str, int]]] = Queue()
        self.errors: Queue[SipParseError] = Queue()

    def on_message(self, message: Message, source: tuple[str, int], _: SipTransport) -> None:
        self.messages.put((message, source))

    def on_parse_error(
        self, error: SipParseError, data: bytes, source: tuple[str, int], _: SipTransport
    ) -> None:
        self.errors.put(error)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[TcpTransport, Collector, TcpTransport, Collector]]:
    left_collector, right_collector = Collector(), Collector()
    left = TcpTransport(LOOPBACK, 0, left_collector.on_message).start()
    right = TcpTransport(
        LOOPBACK, 0, right_collector.on_message, on_parse_error=right_collector.on_parse_error
    ).start()
    yield left, left_collector, right, right_collector
    left.close()
    right.close()


def test_tcp_reuses_the_connection_in_both_directions(
    tcp_pair: tuple[TcpTransport, Collector, TcpTransport, Collector],
) -> None:
    left, left_collector, right, right_collector = tcp_pair
    first = stdlib_socket.getaddrinfo("localhost", 0, 0, stdlib_socket.SOCK_STREAM)[0][4][0]
    name = "localhost" if first == LOOPBACK else LOOPBACK  # hosts where ::1 comes first
    left.send(OPTIONS, (name, right.local_address[1]))
    left.send(OPTIONS, right.local_address)
    request, source = right_collector.messages.get(timeout=5)
    right_collector.messages.get(timeout=5)
    assert isinstance(request, Request)
    # The second send reused the first connection: names resolve to the IP key.
    assert list(left.connections) == [right.local_address]
    # The answer goes back on the connection the request came in on (18.2.2).
    right.send(make_response(request, 200).to_bytes(), source)
    response, _ = left_collector.messages.get(timeout=5)
    assert isinstance(response, Response) and response.status == 200
    assert len(right.connections) == 1 and source in right.connections


def test_tcp_framing_split_and_coalesced_messages(
    tcp_pair: tuple[TcpTransport, Collector, TcpTransport, Collector],
) -> None:
    _, _, right, collector = tcp_pair
    raw = gevent_socket.create_connection(right.local_address)
    try:
        raw.sendall(OPTIONS + OPTIONS[:40])
        gevent.sleep(0.05)
        raw.sendall(OPTIONS[40:])
        first, _ = collector.messages.get(timeout=5)
        second, _ = collector.messages.get(timeout=5)
        assert isinstance(first, Request) and isinstance(second, Request)
        # RFC 5626 CRLFCRLF ping: answered with a CRLF pong.
        raw.sendall(b"\r\n\r\n")
        raw.settimeout(5)
        assert raw.recv(16) == b"\r\n"
    finally:
        raw.close()


def test_tcp_lost_framing_reports_and_closes(
    tcp_pair: tuple[TcpTransport, Collector, TcpTransport, Collector],
) -> None:
    _, _, right, collector = tcp_pair
    raw = gevent_socket.create_connection(right.local_address)
    try:
        raw.sendall(OPTIONS.replace(b"Content-Length: 0\r\n", b""))
        error = collector.errors.get(timeout=5)
        assert error.fatal_for_stream
        raw.settimeout(5)
        assert raw.recv(16) == b""  # closed by the transport
    finally:
        raw.close()


def test_tcp_idle_connections_are_closed() -> None:
    collector = Collector()
    transport = TcpTransport(LOOPBACK, 0, collector.on_message, idle_timeout=0.2).start()
    raw = gevent_socket.create_connection(transport.local_address)
    try:
        raw.sendall(OPTIONS)
        collector.messages.get(timeout=5)
        assert len(transport.connections) == 1
        raw.settimeout(5)
        assert raw.recv(16) == b""
        assert transport.connections == {}
    finally:
        raw.close()
        transport.close()


def test_udp_parse_errors_reported_and_keepalives_ignored() -> None:
    collector = Collector()
    transport = UdpTransport(
        LOOPBACK, 0, collector.on_message, on_parse_error=collector.on_parse_error
    ).start()
    sender = gevent_socket.socket(gevent_socket.AF_INET, gevent_socket.SOCK_DGRAM)
    sender.bind((LOOPBACK, 0))
    try:
        sender.sendto(b"\r\n\r\n", transport.local_address)
        sender.sendto(b"NOT SIP AT ALL\r\n\r\n", transport.local_address)
        sender.sendto(OPTIONS, transport.local_address)
        error = collector.errors.get(timeout=5)
        assert error.status_hint == 400
        message, source = collector.messages.get(timeout=5)
        assert isinstance(message, Request) and source == sender.getsockname()
        assert collector.messages.empty() and collector.errors.empty()
    finally:
        sender.close()
        transport.close()


def test_runner_retransmits_over_udp_and_times_out() -> None:
    endpoint = Endpoint("UDP", TimerConfig(t1=0.01, t2=0.04, t4=0.05))
    silent = gevent_socket.socket(gevent_socket.AF_INET, gevent_socket.SOCK_DGRAM)
    silent.bind((LOOPBACK, 0))
    try:
        target = silent.getsockname()
        options = endpoint.new_request("OPTIONS", f"sip:nobody@{LOOPBACK}:{target[1]}")
        endpoint.runner.send_request(options, target, "UDP")
        event = endpoint.events.get(timeout=5)
        assert isinstance(event, TransactionTimeout) and event.timer == "F"
        silent.settimeout(0.5)
        copies = 0
        while True:
            try:
                data, _ = silent.recvfrom(65535)
            except TimeoutError:
                break
            assert data == options.to_bytes()
            copies += 1
        # 64*T1 = 0.64 s with E at 0.01, 0.02, 0.04 then every 0.04 s: about 17 sends when the
        # machine is idle; a loaded machine fires fewer, so only ask for clear retransmission.
        assert copies >= 3
    finally:
        silent.close()
        endpoint.close()


def test_runner_reports_tcp_connect_failure_as_transport_error() -> None:
    endpoint = Endpoint("TCP")
    try:
        closed_port = free_port(stdlib_socket.SOCK_STREAM)
        options = endpoint.new_request("OPTIONS", f"sip:nobody@{LOOPBACK}:{closed_port}")
        endpoint.runner.send_request(options, (LOOPBACK, closed_port), "TCP")
        event = endpoint.events.get(timeout=5)
        assert isinstance(event, TransportError)
        assert event.transaction.terminated
    finally:
        endpoint.close()


def test_runner_answers_a_broken_request_with_the_parser_status() -> None:
    endpoint = Endpoint("UDP")
    sender = gevent_socket.socket(gevent_socket.AF_INET, gevent_socket.SOCK_DGRAM)
    sender.bind((LOOPBACK, 0))
    try:
        broken = OPTIONS.replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS").replace(
            b"SIP/2.0/TCP", b"SIP/2.0/UDP"
        )
        sender.sendto(broken, (endpoint.host, endpoint.port))
        sender.settimeout(5)
        data, _ = sender.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 400 ")
        assert b"Call-ID: loop-1" in data
    finally:
        sender.close()
        endpoint.close()


def test_runner_answers_through_the_listener_the_request_came_in_on() -> None:
    events: Queue[Event] = Queue()
    runner = TransactionRunner(TransactionLayer(), events.put)
    main = UdpTransport(LOOPBACK, 0, runner.on_message, key="UDP:main").start()
    alg = UdpTransport(LOOPBACK, 0, runner.on_message, key="UDP:alg").start()
    runner.add_transport(main)
    runner.add_transport(alg)
    runner.start()
    phone = gevent_socket.socket(gevent_socket.AF_INET, gevent_socket.SOCK_DGRAM)
    phone.bind((LOOPBACK, 0))
    try:
        options = OPTIONS.replace(b"SIP/2.0/TCP", b"SIP/2.0/UDP")
        phone.sendto(options, alg.local_address)
        event = events.get(timeout=5)
        assert isinstance(event, RequestReceived)
        assert event.transport == "UDP:ALG"
        assert not event.transaction.reliable
        runner.respond(event.transaction, make_response(event.request, 200))
        phone.settimeout(5)
        data, source = phone.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 200 OK")
        assert source == alg.local_address
    finally:
        phone.close()
        runner.stop()
        main.close()
        alg.close()


def test_tcp_response_falls_back_to_via_sent_by_when_the_connection_is_gone() -> None:
    endpoint = Endpoint("TCP")
    phone = Collector()
    phone_listener = TcpTransport(LOOPBACK, 0, phone.on_message).start()
    phone_host, phone_port = phone_listener.local_address
    try:
        raw = gevent_socket.create_connection((endpoint.host, endpoint.port))
        via = f"SIP/2.0/TCP {phone_host}:{phone_port};branch=z9hG4bK-gone".encode()
        raw.sendall(OPTIONS.replace(b"SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-loop-1", via))
        received = endpoint.next_request()
        raw.close()
        gevent.sleep(0.1)  # let the endpoint notice the closed connection
        endpoint.runner.respond(received.transaction, make_response(received.request, 200))
        response, _ = phone.messages.get(timeout=5)
        assert isinstance(response, Response) and response.status == 200
    finally:
        phone_listener.close()
        endpoint.close()


def test_tcp_keepalive_pings_only_on_connections_we_opened() -> None:
    collector = Collector()
    transport = TcpTransport(LOOPBACK, 0, collector.on_message, keepalive_interval=0.1).start()
    server = gevent_socket.socket(gevent_socket.AF_INET, gevent_socket.SOCK_STREAM)
    server.bind((LOOPBACK, 0))
    server.listen(1)
    inbound = gevent_socket.create_connection(transport.local_address)
    try:
        transport.send(OPTIONS, server.getsockname())
        peer, _ = server.accept()
        peer.settimeout(5)
        received = b""
        while b"\r\n\r\n\r\n\r\n" not in received[len(OPTIONS) - 4 :]:
            chunk = peer.recv(4096)
            assert chunk, "connection closed before a keepalive ping"
            received += chunk
        assert received.startswith(OPTIONS)
        peer.close()
        # The connection the peer opened to us gets no pings from our side.
        inbound.settimeout(0.4)
        with pytest.raises(TimeoutError):
            inbound.recv(16)
    finally:
        inbound.close()
        server.close()
        transport.close()


@requires_sipp
def test_retransmitted_2xx_reaches_the_tu_and_gets_the_same_ack(tmp_path: Path) -> None:
    """We hold the ACK back: SIPp retransmits its 200 (UDP), the client transaction in the
    RFC 6026 Accepted state passes it up, and the dialog answers with the ACK it keeps."""
    uac = Endpoint("UDP")
    sipp, port = start_sipp(tmp_path, "UDP", "-m", "1")
    try:
        target = f"sip:service@{LOOPBACK}:{port}"
        offer = build_offer(LocalMedia(address=LOOPBACK, audio_port=40004))
        invite = uac.new_request("INVITE", target, body=offer.to_bytes())
        uac.runner.send_request(invite, (LOOPBACK, port), uac.name)
        assert uac.next_response().status == 180, sipp.output()
        ok = uac.next_response()
        assert ok.status == 200
        dialog = Dialog.create_uac(invite, ok, transport="UDP")
        ack = dialog.create_ack(invite, via=new_via("UDP", uac.host, uac.port))
        retransmitted = uac.next_response(timeout=5)  # SIPp: retrans="500"
        assert retransmitted.status == 200 and dialog.matches_response(retransmitted)
        remembered = dialog.ack_for(retransmitted)
        assert remembered is not None and remembered.to_bytes() == ack.to_bytes()
        destination, transport = dialog.next_hop()
        uac.runner.send_stateless(ack, destination, transport)
        gevent.sleep(0.2)
        bye = dialog.create_request("BYE", via=new_via("UDP", uac.host, uac.port))
        uac.runner.send_request(bye, destination, transport)
        assert uac.next_response().status == 200
        assert sipp.wait(15) == 0, sipp.output()
    finally:
        sipp.kill()
        uac.close()


class AnsweringUas:
    """A UAS that answers every INVITE (180, then 200 with an SDP answer) and every BYE with
    200, from inside the runner's event callback, as a call leg would."""

    def __init__(self, transport_name: str, timers: TimerConfig) -> None:
        self.layer = TransactionLayer(timers)
        self.runner = TransactionRunner(self.layer, self.on_event)
        self.transport: SipTransport
        if transport_name == "UDP":
            self.transport = UdpTransport(LOOPBACK, 0, self.runner.on_message).start()
        else:
            self.transport = TcpTransport(LOOPBACK, 0, self.runner.on_message).start()
        self.runner.add_transport(self.transport)
        self.runner.start()
        self.host, self.port = self.transport.local_address
        self.dialogs = Dialogs()
        self.calls_answered = 0
        self.calls_ended = 0
        self.errors: list[str] = []

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "INVITE":
                answer = build_answer(
                    parse_sdp(request.body), LocalMedia(address=LOOPBACK, audio_port=40010)
                )
                if not isinstance(answer, Answer):
                    self.errors.append(str(answer))
                    return
                tag = generate_tag()
                self.runner.respond(event.transaction, make_response(request, 180, to_tag=tag))
                ok = make_response(request, 200, to_tag=tag)
                ok.headers.add("Contact", f"<sip:uas@{self.host}:{self.port}>")
                ok.headers.add("Content-Type", "application/sdp")
                ok.body = answer.sdp.to_bytes()
                self.runner.respond(event.transaction, ok)
                self.dialogs.add(Dialog.create_uas(request, ok))
                self.calls_answered += 1
            elif request.method == "BYE":
                dialog = self.dialogs.for_request(request)
                status = 481 if dialog is None else (dialog.receive_request(request) or 200)
                self.runner.respond(event.transaction, make_response(request, status))
                if dialog is not None:
                    self.dialogs.remove(dialog)
                    self.calls_ended += 1
        elif isinstance(event, AckReceived):
            dialog = self.dialogs.for_request(event.request)
            if dialog is None:
                self.errors.append("ACK outside any dialog")
        elif isinstance(event, TransactionTimeout | TransportError):
            self.errors.append(str(event))

    def close(self) -> None:
        self.runner.stop()
        self.transport.close()


@requires_sipp
@pytest.mark.slow
def test_sipp_load_against_our_uas_leaves_nothing_behind(
    transport_name: str, tmp_path: Path
) -> None:
    """100 calls at 50 calls/s from SIPp's uac: every one succeeds (SIPp exits 0), every
    dialog ends, and once the timers have run no transaction is left."""
    timers = TimerConfig(t1=0.05, t2=0.2, t4=0.25, timer_d_unreliable=0.5)
    uas = AnsweringUas(transport_name, timers)
    sipp_port = free_port(
        stdlib_socket.SOCK_DGRAM if transport_name == "UDP" else stdlib_socket.SOCK_STREAM
    )
    args = [
        "sipp", "-sn", "uac", f"{LOOPBACK}:{uas.port}", "-i", LOOPBACK, "-p", str(sipp_port),
        "-m", "100", "-r", "50", "-l", "100", "-d", "100", "-nostdin", "-timeout", "30s",
    ]  # fmt: skip
    if transport_name == "TCP":
        args += ["-t", "t1"]
    sipp = SippProcess(args, tmp_path)
    try:
        assert sipp.wait(30) == 0, sipp.output()
        assert uas.errors == []
        assert (uas.calls_answered, uas.calls_ended) == (100, 100)
        assert len(uas.dialogs) == 0
        deadline = time.monotonic() + 10
        while uas.layer.server_transactions and time.monotonic() < deadline:
            gevent.sleep(0.1)
        assert uas.layer.server_transactions == []
        assert uas.layer.get_timer() is None
    finally:
        sipp.kill()
        uas.close()


def test_tcp_connection_limit_closes_new_inbound_connections() -> None:
    collector = Collector()
    transport = TcpTransport(LOOPBACK, 0, collector.on_message, max_connections=2).start()
    clients = [gevent_socket.create_connection(transport.local_address) for _ in range(3)]
    try:
        for client in clients[:2]:
            client.sendall(OPTIONS)
            collector.messages.get(timeout=5)
        clients[2].settimeout(5)
        assert clients[2].recv(16) == b""  # closed by the transport at once
        assert transport.refused_connections == 1
        assert len(transport.connections) == 2
    finally:
        for client in clients:
            client.close()
        transport.close()
