"""RFC 3261 section 17 transaction state machines, with time driven by hand (no sleeps)."""

from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.headers import Via
from protocols.sip.message import Request, Response, make_response
from protocols.sip.parser import parse_message
from protocols.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    build_cancel,
    new_branch,
    new_via,
    via_response_address,
)

PEER = ("192.0.2.1", 5060)
T1, T2, T4 = 0.5, 4.0, 5.0


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK-client-1",
    transport: str = "UDP",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    uri: str = "sip:bob@example.com",
    routes: tuple[str, ...] = (),
) -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=alice-tag",
        f"To: {to}",
        "Call-ID: call-1@192.0.2.1",
        f"CSeq: {cseq} {cseq_method or method}",
        *(f"Route: {route}" for route in routes),
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def response_to(req: Request, status: int, to_tag: str | None = "bob-tag") -> Response:
    """A response as the far end would send it (through bytes, like on the wire)."""
    built = make_response(req, status, to_tag=to_tag if status > 100 else None)
    parsed = parse_message(built.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


def sent(layer: TransactionLayer) -> list[Outgoing]:
    return layer.datagrams_to_send()


def start_lines(outgoing: list[Outgoing]) -> list[str]:
    return [item.data.split(b"\r\n", 1)[0].decode() for item in outgoing]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Outgoing]]:
    """Fire every timer up to ``end`` in order, recording (time, datagram) pairs."""
    output: list[tuple[float, Outgoing]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= end:
        layer.handle_timer(deadline)
        output.extend((deadline, item) for item in sent(layer))
    return output


# -- client INVITE -------------------------------------------------------------------------


def test_client_invite_retransmits_with_doubling_timer_a_and_times_out_with_b() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(request(), PEER, "UDP", now=0.0)
    (first,) = sent(layer)
    assert first.destination == PEER and first.transport == "UDP"
    assert first.transaction is transaction
    assert transaction.state is TransactionState.CALLING
    output = run_until(layer, 64 * T1)
    # Timer A: T1, 2T1, 4T1, ... (no cap for INVITE) until Timer B at 64*T1.
    assert [t for t, _ in output] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(item.data == first.data for _, item in output)
    events = layer.events()
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "B"
    assert isinstance(events[1], TransactionTerminated)
    assert transaction.terminated
    assert layer.get_timer() is None
    assert layer.client_transactions == []


def test_client_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    sent(layer)
    layer.receive(response_to(invite, 180), PEER, "UDP", now=0.2)
    (event,) = layer.events()
    assert isinstance(event, ResponseReceived) and event.response.status == 180
    assert transaction.state is TransactionState.PROCEEDING
    # Neither A nor B runs in Proceeding; only Timer C, minutes away.
    assert layer.get_timer() == pytest.approx(0.2 + 181.0)
    assert run_until(layer, 100.0) == []


def test_timer_c_cancels_a_forgotten_invite_and_timer_b_ends_it() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    layer.receive(response_to(invite, 180), PEER, "UDP", now=1.0)
    layer.receive(response_to(invite, 180), PEER, "UDP", now=100.0)  # re-arms Timer C
    sent(layer)
    layer.events()
    layer.handle_timer(181.5)
    assert sent(layer) == []  # not yet: C was re-armed at 100 s
    layer.handle_timer(281.0)
    timeout = layer.events()[0]
    assert isinstance(timeout, TransactionTimeout) and timeout.timer == "C"
    assert start_lines(sent(layer)) == ["CANCEL sip:bob@example.com SIP/2.0"]
    # A late provisional does not re-arm C nor stop the final Timer B.
    layer.receive(response_to(invite, 183), PEER, "UDP", now=282.0)
    deadline = 281.0 + 64 * T1
    layer.handle_timer(deadline)
    assert transaction.terminated
    assert any(
        isinstance(e, TransactionTimeout) and e.timer == "B" and e.transaction is transaction
        for e in layer.events()
    )


def test_timer_c_disabled() -> None:
    layer = TransactionLayer(TimerConfig(timer_c=None))
    invite = request()
    layer.send_request(invite, PEER, "UDP", now=0.0)
    layer.receive(response_to(invite, 180), PEER, "UDP", now=0.1)
    assert layer.get_timer() is None


def test_client_invite_non_2xx_builds_ack_and_absorbs_retransmissions_until_timer_d() -> None:
    layer = TransactionLayer()
    invite = request(routes=("<sip:proxy.example.com;lr>",))
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    sent(layer)
    busy = response_to(invite, 486)
    layer.receive(busy, PEER, "UDP", now=1.0)
    (ack_out,) = sent(layer)
    ack = parse_message(ack_out.data)
    assert isinstance(ack, Request)
    # RFC 3261 17.1.1.3
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert ack.vias[0].branch == invite.vias[0].branch
    assert len(ack.vias) == 1
    assert ack.to.tag == "bob-tag"
    assert ack.from_.tag == "alice-tag"
    assert ack.call_id == invite.call_id
    assert (ack.cseq.num, ack.cseq.method) == (1, "ACK")
    assert [str(r.uri) for r in ack.routes] == ["sip:proxy.example.com;lr"]
    (event,) = layer.events()
    assert isinstance(event, ResponseReceived) and event.response.status == 486
    assert transaction.state is TransactionState.COMPLETED
    # Retransmitted 486: same ACK again, nothing for the TU.
    layer.receive(busy, PEER, "UDP", now=2.0)
    assert [item.data for item in sent(layer)] == [ack_out.data]
    assert layer.events() == []
    # Timer D: 32 s on UDP.
    assert layer.get_timer() == pytest.approx(33.0)
    layer.handle_timer(32.9)
    assert not transaction.terminated
    layer.handle_timer(33.0)
    assert transaction.terminated
    assert isinstance(layer.events()[-1], TransactionTerminated)


def test_client_invite_2xx_accepted_state_passes_retransmissions_up_until_timer_m() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    ok = response_to(invite, 200)
    layer.receive(ok, PEER, "UDP", now=0.1)
    layer.receive(ok, PEER, "UDP", now=0.6)
    assert sent(layer)[1:] == []  # no ACK from the transaction for a 2xx, no retransmissions
    events = layer.events()
    assert [type(e) for e in events] == [ResponseReceived, ResponseReceived]
    assert transaction.state is TransactionState.ACCEPTED
    layer.handle_timer(0.1 + 64 * T1)
    assert transaction.terminated
    # After Timer M a 2xx retransmission is a stray response for the dialog layer.
    layer.events()
    layer.receive(ok, PEER, "UDP", now=40.0)
    (stray,) = layer.events()
    assert isinstance(stray, StrayResponse)


def test_client_invite_over_tcp_has_no_retransmissions_and_zero_timer_d() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    transaction = layer.send_request(invite, PEER, "tcp", now=0.0)
    assert transaction.reliable
    sent(layer)
    # Only Timer B is pending.
    assert layer.get_timer() == 64 * T1
    layer.receive(response_to(invite, 404), PEER, "TCP", now=1.0)
    assert start_lines(sent(layer)) == ["ACK sip:bob@example.com SIP/2.0"]
    assert layer.get_timer() == 1.0
    layer.handle_timer(1.0)
    assert transaction.terminated


def test_cancel_waits_for_provisional_then_goes_with_the_invite_branch() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    sent(layer)
    layer.cancel(transaction, now=0.1)
    assert sent(layer) == []  # RFC 3261 9.1: not before a provisional response
    layer.receive(response_to(invite, 180), PEER, "UDP", now=0.2)
    (cancel_out,) = sent(layer)
    cancel = parse_message(cancel_out.data)
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL"
    assert cancel.vias[0].branch == invite.vias[0].branch
    assert (cancel.cseq.num, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.to.tag is None
    assert isinstance(transaction.cancel_transaction, ClientTransaction)
    # The CANCEL is its own non-INVITE transaction: 200 to it, then 487 to the INVITE.
    layer.receive(response_to(cancel, 200), PEER, "UDP", now=0.3)
    layer.receive(response_to(invite, 487), PEER, "UDP", now=0.3)
    statuses = [
        (e.transaction.method, e.response.status)
        for e in layer.events()
        if isinstance(e, ResponseReceived)
    ]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]


def test_send_request_rejects_ack_and_old_branches() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), PEER, "UDP", now=0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(branch="oldstyle"), PEER, "UDP", now=0.0)
    layer.send_request(request(), PEER, "UDP", now=0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(), PEER, "UDP", now=0.0)


# -- client non-INVITE ---------------------------------------------------------------------


def test_client_non_invite_timer_e_capped_at_t2_and_timer_f() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), PEER, "UDP", now=0.0)
    sent(layer)
    output = run_until(layer, 64 * T1)
    # Timer E: T1, 2T1, 4T1, then T2 (4 s) every time, until Timer F at 64*T1 = 32 s.
    assert [t for t, _ in output] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    events = layer.events()
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "F"


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, PEER, "UDP", now=0.0)
    sent(layer)
    layer.handle_timer(0.5)  # first retransmission, next one in 1 s
    sent(layer)
    layer.receive(response_to(options, 100), PEER, "UDP", now=0.6)
    output = run_until(layer, 20.0)
    # The pending timer still fires at 1.5; from then on the interval is T2.
    assert [t for t, _ in output] == [1.5, 5.5, 9.5, 13.5, 17.5]


def test_client_non_invite_final_response_then_timer_k_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    transaction = layer.send_request(options, PEER, "UDP", now=0.0)
    sent(layer)
    ok = response_to(options, 200)
    layer.receive(ok, PEER, "UDP", now=0.1)
    layer.receive(ok, PEER, "UDP", now=0.2)  # retransmission: absorbed
    events = layer.events()
    assert [type(e) for e in events] == [ResponseReceived]
    assert transaction.state is TransactionState.COMPLETED
    assert layer.get_timer() == pytest.approx(0.1 + T4)
    assert run_until(layer, 10.0) == []  # no more retransmissions
    assert transaction.terminated


def test_client_non_invite_reliable_timer_k_is_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    transaction = layer.send_request(options, PEER, "TCP", now=0.0)
    assert layer.get_timer() == 64 * T1  # Timer F only, no Timer E
    layer.receive(response_to(options, 200), PEER, "TCP", now=1.0)
    layer.handle_timer(1.0)
    assert transaction.terminated


def test_custom_t1_t2_scale_every_timer() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    layer.send_request(request("OPTIONS"), PEER, "UDP", now=0.0)
    sent(layer)
    times = [round(t, 3) for t, _ in run_until(layer, 6.4)]
    assert times[:5] == [0.1, 0.3, 0.7, 1.1, 1.5]
    assert isinstance(layer.events()[0], TransactionTimeout)


# -- server INVITE -------------------------------------------------------------------------


def receive_invite(
    layer: TransactionLayer, invite: Request, transport: str = "UDP", now: float = 0.0
) -> ServerTransaction:
    layer.receive(invite, PEER, transport, now)
    events = layer.events()
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    return events[0].transaction


def test_server_invite_sends_trying_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    assert start_lines(sent(layer)) == ["SIP/2.0 100 Trying"]
    layer.receive(invite, PEER, "UDP", now=0.5)
    assert start_lines(sent(layer)) == ["SIP/2.0 100 Trying"]  # last provisional resent
    assert layer.events() == []
    layer.respond(transaction, make_response(invite, 180, to_tag="bob-tag"), now=0.6)
    sent(layer)
    layer.receive(invite, PEER, "UDP", now=1.0)
    assert start_lines(sent(layer)) == ["SIP/2.0 180 Ringing"]
    assert layer.find_server_transaction(invite) is transaction


def test_server_invite_error_response_timer_g_capped_at_t2_then_timer_h() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    sent(layer)
    layer.respond(transaction, make_response(invite, 486, to_tag="bob-tag"), now=0.0)
    assert start_lines(sent(layer)) == ["SIP/2.0 486 Busy Here"]
    output = run_until(layer, 64 * T1)
    # Timer G: T1, 2T1, 4T1, then capped at T2; Timer H ends it at 64*T1 without an ACK.
    assert [t for t, _ in output] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(start_lines([item]) == ["SIP/2.0 486 Busy Here"] for _, item in output)
    timeout, terminated = layer.events()
    assert isinstance(timeout, TransactionTimeout) and timeout.timer == "H"
    assert isinstance(terminated, TransactionTerminated)


def test_server_invite_ack_confirms_then_timer_i_absorbs_ack_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    layer.respond(transaction, make_response(invite, 603, to_tag="bob-tag"), now=0.0)
    sent(layer)
    ack = request("ACK", cseq_method="ACK", to_tag="bob-tag")
    layer.receive(ack, PEER, "UDP", now=0.2)
    assert transaction.state is TransactionState.CONFIRMED
    layer.receive(ack, PEER, "UDP", now=0.3)  # retransmitted ACK: absorbed
    layer.receive(invite, PEER, "UDP", now=0.4)  # and a late INVITE retransmission too
    assert sent(layer) == []
    assert layer.events() == []
    assert layer.get_timer() == pytest.approx(0.2 + T4)
    layer.handle_timer(0.2 + T4)
    assert transaction.terminated


def test_server_invite_2xx_accepted_absorbs_invite_and_passes_ack_up() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    sent(layer)
    layer.respond(transaction, make_response(invite, 200, to_tag="bob-tag"), now=0.1)
    assert start_lines(sent(layer)) == ["SIP/2.0 200 OK"]
    assert transaction.state is TransactionState.ACCEPTED
    layer.receive(invite, PEER, "UDP", now=0.5)
    assert sent(layer) == []  # the TU (dialog) retransmits 2xx, not the transaction
    layer.respond(transaction, make_response(invite, 200, to_tag="bob-tag"), now=0.6)
    assert start_lines(sent(layer)) == ["SIP/2.0 200 OK"]  # ...through the transaction
    ack = request("ACK", branch="z9hG4bK-ack-new", cseq_method="ACK", to_tag="bob-tag")
    layer.receive(ack, PEER, "UDP", now=0.6)
    (event,) = layer.events()
    assert isinstance(event, AckReceived) and event.request.method == "ACK"
    layer.handle_timer(0.1 + 64 * T1)  # Timer L
    assert transaction.terminated


def test_server_invite_reliable_no_timer_g_and_zero_timer_i() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    transaction = receive_invite(layer, invite, transport="TCP")
    layer.respond(transaction, make_response(invite, 480, to_tag="bob-tag"), now=0.0)
    sent(layer)
    assert layer.get_timer() == 64 * T1  # Timer H only
    layer.receive(
        request("ACK", transport="TCP", cseq_method="ACK", to_tag="bob-tag"), PEER, "TCP", 1.0
    )
    layer.handle_timer(1.0)
    assert transaction.terminated


def test_server_invite_without_auto_trying() -> None:
    layer = TransactionLayer(auto_trying=False)
    invite = request()
    transaction = receive_invite(layer, invite)
    assert sent(layer) == []
    layer.receive(invite, PEER, "UDP", now=0.5)  # nothing sent yet, nothing to resend
    assert sent(layer) == []
    assert transaction.state is TransactionState.PROCEEDING


# -- server non-INVITE ---------------------------------------------------------------------


def test_server_non_invite_trying_absorbs_then_completed_resends_until_timer_j() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.receive(options, PEER, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    transaction = event.transaction
    assert transaction.state is TransactionState.TRYING
    assert sent(layer) == []  # no 100 Trying for non-INVITE
    layer.receive(options, PEER, "UDP", now=0.5)
    assert sent(layer) == [] and layer.events() == []
    layer.respond(transaction, make_response(options, 200, to_tag="t"), now=1.0)
    assert start_lines(sent(layer)) == ["SIP/2.0 200 OK"]
    layer.receive(options, PEER, "UDP", now=2.0)
    assert start_lines(sent(layer)) == ["SIP/2.0 200 OK"]
    assert layer.get_timer() == pytest.approx(1.0 + 64 * T1)  # Timer J
    layer.handle_timer(1.0 + 64 * T1)
    assert transaction.terminated
    # After Timer J the same request is new again.
    layer.receive(options, PEER, "UDP", now=40.0)
    assert any(isinstance(e, RequestReceived) for e in layer.events())


def test_server_non_invite_reliable_timer_j_is_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    layer.receive(options, PEER, "TCP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    layer.respond(event.transaction, make_response(options, 200), now=0.0)
    layer.handle_timer(0.0)
    assert event.transaction.terminated


def test_respond_after_final_response_is_an_error() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.receive(options, PEER, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    layer.respond(event.transaction, make_response(options, 200), now=0.0)
    with pytest.raises(ValueError):
        layer.respond(event.transaction, make_response(options, 500), now=0.0)


# -- matching ------------------------------------------------------------------------------


def test_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    invite = request()
    receive_invite(layer, invite)
    # Same branch, other sent-by: a different transaction (17.2.3).
    other = parse_message(invite.to_bytes().replace(b"192.0.2.1:5060;", b"192.0.2.9:5060;"))
    layer.receive(other, ("192.0.2.9", 5060), "UDP", now=0.1)
    assert any(isinstance(e, RequestReceived) for e in layer.events())
    assert len(layer.server_transactions) == 2


def test_cancel_matches_invite_server_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    invite_transaction = receive_invite(layer, invite)
    sent(layer)
    cancel = build_cancel(invite)
    layer.receive(parse_message(cancel.to_bytes()), PEER, "UDP", now=0.5)
    (event,) = layer.events()
    assert isinstance(event, CancelReceived)
    assert event.invite_transaction is invite_transaction
    assert invite_transaction.cancelled
    assert start_lines(sent(layer)) == ["SIP/2.0 200 OK"]  # 200 to the CANCEL itself
    layer.respond(invite_transaction, make_response(invite, 487, to_tag="x"), now=0.6)
    assert start_lines(sent(layer)) == ["SIP/2.0 487 Request Terminated"]


def test_cancel_for_unknown_transaction_gets_481() -> None:
    layer = TransactionLayer()
    cancel = request("CANCEL", branch="z9hG4bK-nothing")
    layer.receive(cancel, PEER, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, CancelReceived) and event.invite_transaction is None
    assert start_lines(sent(layer)) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]


def test_rfc2543_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    invite = request(branch="old-style-1")
    transaction = receive_invite(layer, invite)
    sent(layer)
    layer.receive(invite, PEER, "UDP", now=0.5)  # retransmission: same fields
    assert start_lines(sent(layer)) == ["SIP/2.0 100 Trying"]
    assert layer.events() == []
    layer.respond(transaction, make_response(invite, 486, to_tag="our-tag"), now=0.6)
    sent(layer)
    # An ACK with another To tag does not belong to this transaction.
    wrong = request("ACK", branch="old-style-1", cseq_method="ACK", to_tag="other")
    layer.receive(wrong, PEER, "UDP", now=0.7)
    assert isinstance(layer.events()[0], AckReceived)
    assert transaction.state is TransactionState.COMPLETED
    ack = request("ACK", branch="old-style-1", cseq_method="ACK", to_tag="our-tag")
    layer.receive(ack, PEER, "UDP", now=0.8)
    assert transaction.state is TransactionState.CONFIRMED
    # Another CSeq is another transaction.
    layer.receive(request(branch="old-style-1", cseq=2), PEER, "UDP", now=0.9)
    assert any(isinstance(e, RequestReceived) for e in layer.events())


def test_responses_match_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, PEER, "UDP", now=0.0)
    # Same branch but CSeq method CANCEL: not the INVITE's transaction.
    cancel_response = response_to(build_cancel(invite), 200)
    layer.receive(cancel_response, PEER, "UDP", now=0.1)
    (event,) = layer.events()
    assert isinstance(event, StrayResponse)


# -- transport errors, destinations, helpers ------------------------------------------------


def test_transport_failure_terminates_with_transport_error() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(request("OPTIONS", transport="TCP"), PEER, "TCP", now=0.0)
    (item,) = sent(layer)
    layer.transport_failed(item, "connection refused", now=0.0)
    error, terminated = layer.events()
    assert isinstance(error, TransportError) and error.reason == "connection refused"
    assert isinstance(terminated, TransactionTerminated)
    assert transaction.terminated and layer.get_timer() is None


def test_response_destination_symmetric_or_via() -> None:
    natted = ("198.51.100.7", 40000)
    layer = TransactionLayer()
    layer.receive(request("OPTIONS"), natted, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    assert event.transaction.peer == natted
    rfc = TransactionLayer(symmetric_responses=False)
    rfc.receive(request("OPTIONS"), natted, "UDP", now=0.0)
    (event,) = rfc.events()
    assert isinstance(event, RequestReceived)
    # RFC 3261 18.2.2: received (stamped from the source) and the sent-by port.
    assert event.transaction.peer == ("198.51.100.7", 5060)
    unstamped = TransactionLayer(symmetric_responses=False, stamp_received=False)
    unstamped.receive(request("OPTIONS"), natted, "UDP", now=0.0)
    (event,) = unstamped.events()
    assert isinstance(event, RequestReceived)
    assert event.transaction.peer == ("192.0.2.1", 5060)
    assert via_response_address(Via.parse("SIP/2.0/UDP a.example;rport;branch=x"), natted) == natted
    assert via_response_address(
        Via.parse("SIP/2.0/UDP a.example:5070;received=203.0.113.1;branch=x"), natted
    ) == ("203.0.113.1", 5070)


def test_received_and_rport_stamped_into_top_via_and_echoed() -> None:
    natted = ("198.51.100.7", 40000)
    layer = TransactionLayer()
    invite = parse_message(
        request().to_bytes().replace(b"192.0.2.1:5060;branch", b"192.0.2.1:5060;rport;branch")
    )
    layer.receive(invite, natted, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    via = event.request.via
    assert (via.received, via.rport) == ("198.51.100.7", 40000)
    (trying,) = sent(layer)
    assert b"received=198.51.100.7" in trying.data and b"rport=40000" in trying.data
    # Same host as sent-by and no rport: nothing to add.
    same = request("OPTIONS")
    layer.receive(same, ("192.0.2.1", 5060), "UDP", now=0.0)
    assert same.via.received is None


def test_new_via_and_branch() -> None:
    branch = new_branch()
    assert branch.startswith("z9hG4bK") and branch != new_branch()
    via = new_via("udp", "192.0.2.5", 5080)
    assert str(via).startswith("SIP/2.0/UDP 192.0.2.5:5080;branch=z9hG4bK")
    assert via.has_rport


def test_many_transactions_timer_heap_orders_deadlines() -> None:
    layer = TransactionLayer()
    for index in range(50):
        layer.send_request(
            request("OPTIONS", branch=f"z9hG4bK-{index}"), PEER, "UDP", now=index * 0.01
        )
    sent(layer)
    assert layer.get_timer() == pytest.approx(0.5)
    layer.handle_timer(0.5)
    assert len(sent(layer)) == 1
    layer.handle_timer(0.5 + 49 * 0.01)
    assert len(sent(layer)) == 49


# -- randomized sequences: the state machines never crash and keep their invariants ---------

_client_step = st.one_of(
    st.tuples(st.just("response"), st.sampled_from([100, 180, 183, 200, 302, 486, 503])),
    st.tuples(st.just("time"), st.floats(0.0, 40.0)),
    st.tuples(st.just("cancel"), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    steps=st.lists(_client_step, max_size=12),
)
def test_client_transaction_random_sequences(
    method: str, transport: str, steps: list[tuple[str, float]]
) -> None:
    layer = TransactionLayer()
    req = request(method, transport=transport)
    transaction = layer.send_request(req, PEER, transport, now=0.0)
    now = 0.0
    finals: list[int] = []
    for kind, value in steps:
        if kind == "response":
            layer.receive(response_to(req, int(value)), PEER, transport, now)
        elif kind == "time":
            now += value
            layer.handle_timer(now)
        else:
            layer.cancel(transaction, now)
        for event in layer.events():
            if isinstance(event, ResponseReceived) and event.transaction is transaction:
                if event.response.status >= 300:
                    finals.append(event.response.status)
        for item in sent(layer):
            if item.message is not req and isinstance(item.message, Request):
                assert item.message.method in ("ACK", "CANCEL")
                if item.message.method == "ACK":
                    assert method == "INVITE"
    # At most one non-2xx final response reaches the TU.
    assert len(finals) <= 1
    if transaction.terminated:
        assert transaction.timers == {}
        assert transaction not in layer.client_transactions


_server_step = st.one_of(
    st.tuples(st.just("retransmit"), st.just(0)),
    st.tuples(st.just("respond"), st.sampled_from([180, 200, 404, 486])),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("time"), st.floats(0.0, 40.0)),
)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    steps=st.lists(_server_step, max_size=12),
)
def test_server_transaction_random_sequences(
    method: str, transport: str, steps: list[tuple[str, int]]
) -> None:
    layer = TransactionLayer()
    req = request(method, transport=transport)
    layer.receive(req, PEER, transport, 0.0)
    (first,) = [e for e in layer.events() if isinstance(e, RequestReceived)]
    transaction = first.transaction
    sent(layer)  # the automatic 100 Trying
    now = 0.0
    final_sent = False
    for kind, value in steps:
        if kind == "retransmit":
            layer.receive(req, PEER, transport, now)
        elif kind == "respond":
            status = int(value)
            allowed = not transaction.terminated and (
                transaction.state in (TransactionState.TRYING, TransactionState.PROCEEDING)
                or (transaction.state is TransactionState.ACCEPTED and status == 200)
            )
            if allowed:
                layer.respond(transaction, make_response(req, status, to_tag="t"), now)
                final_sent = final_sent or status >= 200
            else:
                with pytest.raises(ValueError):
                    layer.respond(transaction, make_response(req, status, to_tag="t"), now)
        elif kind == "ack":
            ack = request("ACK", transport=transport, cseq_method="ACK", to_tag="t")
            layer.receive(ack, PEER, transport, now)
        else:
            now += value
            layer.handle_timer(now)
        # The TU hears of the request once; retransmissions are absorbed.
        assert not any(
            isinstance(e, RequestReceived) and e.transaction is transaction for e in layer.events()
        )
        if transport == "TCP":
            # Reliable transports never retransmit on timers: at most one message per step.
            assert len(sent(layer)) <= 1
        else:
            sent(layer)
    if transaction.terminated:
        assert transaction.timers == {}
    elif final_sent:
        assert layer.get_timer() is not None


@pytest.mark.parametrize("missing", ["CSeq", "Call-ID", "From", "Via"])
def test_messages_missing_mandatory_headers_are_dropped_not_raised(missing: str) -> None:
    layer = TransactionLayer()
    old_style = request("OPTIONS", branch="old-style-2")
    old_style.headers.remove(missing)
    assert layer.find_server_transaction(old_style) is None
    layer.receive(old_style, PEER, "UDP", now=0.0)
    assert layer.events() == [] and sent(layer) == []
    invite = request()
    layer.send_request(invite, PEER, "UDP", now=0.0)
    sent(layer)
    response = response_to(invite, 200)
    response.headers.remove(missing)
    layer.receive(response, PEER, "UDP", now=0.1)
    assert not any(isinstance(e, ResponseReceived) for e in layer.events())


def test_guard_drops_a_non_invite_the_tu_never_answers() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.receive(options, PEER, "UDP", now=0.0)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    assert layer.get_timer() == pytest.approx(64 * T1)
    layer.handle_timer(64 * T1)
    timeout, terminated = layer.events()
    assert isinstance(timeout, TransactionTimeout) and timeout.timer == "F"
    assert timeout.transaction is event.transaction
    assert isinstance(terminated, TransactionTerminated)
    assert layer.server_transactions == [] and sent(layer) == []


def test_guard_answers_408_for_an_invite_left_ringing() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    layer.respond(transaction, make_response(invite, 180, to_tag="ring"), now=10.0)
    sent(layer)
    layer.handle_timer(181.0)  # C was re-armed by the 180 at 10 s
    assert sent(layer) == [] and transaction.state is TransactionState.PROCEEDING
    layer.handle_timer(191.0)
    (timeout,) = layer.events()
    assert isinstance(timeout, TransactionTimeout) and timeout.timer == "C"
    (out,) = sent(layer)
    response = parse_message(out.data)
    assert isinstance(response, Response)
    assert response.status == 408 and response.to.tag == "ring"
    assert transaction.state is TransactionState.COMPLETED  # then G/H or the ACK as usual


def test_guards_off_and_stopped_by_a_final_response() -> None:
    unguarded = TransactionLayer(tu_guards=False)
    unguarded.receive(request("OPTIONS"), PEER, "UDP", now=0.0)
    assert unguarded.get_timer() is None
    layer = TransactionLayer()
    invite = request()
    transaction = receive_invite(layer, invite)
    layer.respond(transaction, make_response(invite, 486, to_tag="x"), now=1.0)
    assert "C" not in transaction.timers


# -- ended transactions are released -------------------------------------------------------


def _released(reference: weakref.ReferenceType[object]) -> bool:
    gc.collect()
    return reference() is None


def test_an_answered_invite_client_transaction_is_not_kept_by_its_cancelled_timer_c() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction = layer.send_request(invite, PEER, "UDP", now=0.0)
    layer.receive(response_to(invite, 180), PEER, "UDP", now=0.1)  # arms Timer C (181 s)
    layer.receive(response_to(invite, 200), PEER, "UDP", now=0.2)  # cancels it, arms M
    layer.handle_timer(0.2 + 64 * T1)  # Timer M: terminated, long before C would have fired
    assert transaction.terminated
    sent(layer)
    layer.events()
    reference = weakref.ref(transaction)
    del transaction
    assert _released(reference)
    assert layer.get_timer() is None  # the stale Timer C entry is skipped, never fired


def test_a_transaction_ended_through_terminate_is_released_at_once() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.receive(options, PEER, "UDP", now=0.0)
    (event,) = layer.events()
    transaction = event.transaction
    del event
    layer.respond(transaction, make_response(options, 200), now=0.1)  # Timer J: 32 s
    sent(layer)
    layer.terminate(transaction)
    layer.terminate(transaction)  # idempotent
    (terminated,) = layer.events()
    assert isinstance(terminated, TransactionTerminated) and terminated.transaction is transaction
    assert transaction.last_response is None and transaction.timers == {}
    assert layer.server_transactions == []
    reference = weakref.ref(transaction)
    del transaction, terminated
    assert _released(reference)
    # A retransmission now starts a new transaction rather than repeating the 200.
    layer.receive(options, PEER, "UDP", now=1.0)
    assert [type(e) for e in layer.events()] == [RequestReceived]


def test_stale_timer_entries_do_not_pile_up() -> None:
    layer = TransactionLayer()
    for index in range(1000):
        invite = request(branch=f"z9hG4bK-held-{index}")
        transaction = receive_invite(layer, invite, now=index * 0.01)
        layer.respond(transaction, make_response(invite, 200, to_tag="b"), now=index * 0.01)
        layer.terminate(transaction)  # the TU is done with it (Timer C and L cancelled)
        sent(layer)
        layer.events()
    # Two cancelled timers per transaction would be 2000 entries until Timer C expires.
    assert len(layer._timer_heap) < 200
    assert layer.get_timer() is None
