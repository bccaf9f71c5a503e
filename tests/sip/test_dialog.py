"""RFC 3261 section 12 dialogs."""

from __future__ import annotations

import pytest

from protocols.sip.dialog import (
    AnswerRetransmission,
    Dialog,
    DialogError,
    DialogId,
    Dialogs,
    DialogState,
    is_reliable_provisional,
    next_hop,
)
from protocols.sip.message import Request, Response, make_response
from protocols.sip.parser import parse_message
from protocols.sip.transaction import TimerConfig, new_via


def parse_request(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def parse_response(text: str) -> Response:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Response)
    return message


INVITE = """INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 2 INVITE
Contact: <sip:alice@client.atlanta.example.com;transport=udp>
Authorization: Digest username="alice", realm="atlanta.example.com", nonce="n", uri="sip:bob@biloxi.example.com", response="r"
Content-Length: 0

"""


def response(
    status: int,
    *,
    extra: tuple[str, ...] = (),
    to_tag: str | None = "8321234356",
    contact: str | None = "<sip:bob@client.biloxi.example.com>",
    record_routes: tuple[str, ...] = (
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ),
    cseq: str = "2 INVITE",
) -> Response:
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
        *(f"Record-Route: {rr}" for rr in record_routes),
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        "To: Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: 3848276298220188511@atlanta.example.com",
        f"CSeq: {cseq}",
        *([f"Contact: {contact}"] if contact else []),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_response("\n".join(lines))


def uac_dialog(status: int = 200, **kwargs: object) -> Dialog:
    return Dialog.create_uac(parse_request(INVITE), response(status, **kwargs))  # type: ignore[arg-type]


# -- UAC side ------------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    dialog = uac_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId(
        "3848276298220188511@atlanta.example.com", "9fxced76sl", "8321234356"
    )
    assert str(dialog.remote_target) == "sip:bob@client.biloxi.example.com"
    # 12.1.2: Record-Route reversed.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert dialog.local_seq == 2 and dialog.remote_seq is None
    assert dialog.is_uac
    assert dialog.local_uri.tag is None and dialog.remote_uri.tag is None


def test_uac_early_dialog_from_1xx_with_tag_then_confirmed_by_2xx() -> None:
    dialog = uac_dialog(180, contact="<sip:bob@early.biloxi.example.com>", record_routes=())
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == []
    final = response(200)
    dialog.update_from_dialog_response(final)
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@client.biloxi.example.com"
    # The route set is recomputed from the 2xx.
    assert [str(r.uri) for r in dialog.route_set][0] == "sip:p1.example.com;lr"


def test_early_dialog_ends_on_error_response() -> None:
    dialog = uac_dialog(183)
    dialog.update_from_dialog_response(response(486))
    assert dialog.state is DialogState.TERMINATED


def test_update_with_response_of_another_dialog_rejected() -> None:
    dialog = uac_dialog(180)
    with pytest.raises(DialogError):
        dialog.update_from_dialog_response(response(200, to_tag="fork-2"))


@pytest.mark.parametrize(
    ("status", "kwargs"),
    [
        (100, {}),
        (180, {"to_tag": None}),
        (200, {"contact": None}),
        (486, {}),
    ],
)
def test_responses_that_create_no_dialog(status: int, kwargs: dict[str, object]) -> None:
    with pytest.raises(DialogError):
        uac_dialog(status, **kwargs)


def test_bye_with_loose_routes_and_incremented_cseq() -> None:
    dialog = uac_dialog()
    via = new_via("UDP", "client.atlanta.example.com", 5060)
    bye = dialog.create_request("BYE", via=via)
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@client.biloxi.example.com"
    assert [str(r.uri) for r in bye.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert (bye.cseq.num, bye.cseq.method) == (3, "BYE")
    assert bye.from_.tag == "9fxced76sl" and bye.to.tag == "8321234356"
    assert bye.from_.display == "Alice"
    assert bye.call_id == dialog.call_id
    assert bye.vias[0].branch is not None and bye.vias[0].branch.startswith("z9hG4bK")
    assert bye.contact is None  # BYE is not a target refresh
    assert bye.max_forwards == 70
    # It survives the wire.
    assert isinstance(parse_message(bye.to_bytes()), Request)
    info = dialog.create_request(
        "INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay"
    )
    assert info.cseq.num == 4
    assert info.content_type == "application/dtmf-relay" and info.body == b"Signal=1\r\n"


def test_reinvite_carries_contact_and_sdp() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.contact is not None
    assert str(reinvite.contact.uri) == "sip:alice@client.atlanta.example.com;transport=udp"
    assert reinvite.content_length == 5


def test_strict_route_first_hop_goes_in_request_uri() -> None:
    dialog = uac_dialog(
        record_routes=("<sip:p2.example.com;lr>", "<sip:p1.example.com;method=INVITE>")
    )
    bye = dialog.create_request("BYE")
    # 12.2.1.1: the strict router's URI (minus parameters not allowed in a Request-URI) is the
    # Request-URI; the rest of the route set follows, then the remote target as last Route.
    assert str(bye.uri) == "sip:p1.example.com"
    assert [str(r.uri) for r in bye.routes] == [
        "sip:p2.example.com;lr",
        "sip:bob@client.biloxi.example.com",
    ]
    # 8.1.2: with a strict router first, the request goes to the Request-URI (p1).
    assert dialog.next_hop() == (("p1.example.com", 5060), "UDP")


def test_ack_for_2xx_keeps_invite_cseq_and_credentials_and_is_remembered() -> None:
    invite = parse_request(INVITE)
    ok = response(200)
    dialog = Dialog.create_uac(invite, ok)
    ack = dialog.create_ack(invite, via=new_via("UDP", "client.atlanta.example.com", 5060))
    assert (ack.cseq.num, ack.cseq.method) == (2, "ACK")
    assert ack.headers.get("Authorization") == invite.headers.get("Authorization")
    assert [str(r.uri) for r in ack.routes][0] == "sip:p1.example.com;lr"
    # Kept as the bytes sent (a held call keeps its dialog): the same ACK on the wire.
    remembered = dialog.ack_for(ok)
    assert remembered is not None and remembered.to_bytes() == ack.to_bytes()
    assert dialog.ack_for(response(200, cseq="99 INVITE")) is None
    assert dialog.local_seq == 2  # ACK does not consume a CSeq
    with pytest.raises(DialogError):
        dialog.create_request("ACK")


def test_target_refresh_by_2xx_to_reinvite_and_end_on_481() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    refreshed = response(200, contact="<sip:bob@moved.biloxi.example.com>", cseq="3 INVITE")
    dialog.receive_response(reinvite, refreshed)
    assert str(dialog.remote_target) == "sip:bob@moved.biloxi.example.com"
    info = dialog.create_request("INFO")
    dialog.receive_response(info, response(481, cseq="4 INFO"))
    assert dialog.terminated
    with pytest.raises(DialogError):
        dialog.create_request("BYE")


def test_update_is_a_target_refresh_in_both_directions() -> None:
    dialog = uac_dialog()
    update = dialog.create_request("UPDATE", body=b"v=0\r\n", content_type="application/sdp")
    assert update.contact is not None and update.cseq.method == "UPDATE"
    dialog.receive_response(
        update, response(200, contact="<sip:bob@updated.example.com>", cseq="3 UPDATE")
    )
    assert str(dialog.remote_target) == "sip:bob@updated.example.com"
    uas, _ = uas_dialog()
    assert uas.receive_request(incoming("UPDATE", 314160, "<sip:alice@u.example.com>")) is None
    assert str(uas.remote_target) == "sip:alice@u.example.com"


def test_bye_2xx_terminates() -> None:
    dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    dialog.receive_response(bye, response(200, cseq="3 BYE"))
    assert dialog.terminated


def test_prack_for_reliable_provisionals_in_order_only() -> None:
    invite = parse_request(INVITE)
    reliable = ("Require: 100rel", "RSeq: 7")
    progress = response(183, extra=reliable)
    assert is_reliable_provisional(progress)
    dialog = Dialog.create_uac(invite, progress)
    prack = dialog.create_prack(progress, via=new_via("UDP", "client.atlanta.example.com", 5060))
    assert prack is not None
    assert (prack.method, prack.cseq.num, prack.cseq.method) == ("PRACK", 3, "PRACK")
    assert prack.headers.get("RAck") == "7 2 INVITE"
    assert str(prack.uri) == "sip:bob@client.biloxi.example.com"
    assert dialog.create_prack(progress) is None  # retransmission
    assert dialog.create_prack(response(183, extra=("Require: 100rel", "RSeq: 9"))) is None
    nxt = dialog.create_prack(response(180, extra=("Require: 100rel", "RSeq: 8")))
    assert nxt is not None and nxt.headers.get("RAck") == "8 2 INVITE"
    unreliable = response(180)
    assert not is_reliable_provisional(unreliable)
    assert dialog.create_prack(unreliable) is None
    assert not is_reliable_provisional(response(200, extra=reliable))
    assert not is_reliable_provisional(response(183, extra=("Require: 100rel", "RSeq: x")))


# -- UAS side ------------------------------------------------------------------------------


INCOMING_INVITE = """INVITE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8
Record-Route: <sip:p1.example.com;lr>
Record-Route: <sip:p2.example.com;lr>
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
To: Bob <sip:bob@biloxi.example.com>
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
Content-Length: 0

"""


def uas_dialog() -> tuple[Dialog, Request]:
    invite = parse_request(INCOMING_INVITE)
    ok = make_response(invite, 200, to_tag="bob-tag")
    ok.headers.add("Contact", "<sip:bob@192.0.2.4>")
    return Dialog.create_uas(invite, ok), invite


def incoming(method: str, cseq: int, contact: str | None = None) -> Request:
    text = (
        f"{method} sip:bob@192.0.2.4 SIP/2.0\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK-in-dialog\n"
        "Max-Forwards: 70\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=bob-tag\n"
        "Call-ID: a84b4c76e66710\n"
        f"CSeq: {cseq} {method}\n"
        + (f"Contact: {contact}\n" if contact else "")
        + "Content-Length: 0\n\n"
    )
    return parse_request(text)


def test_uas_dialog_from_request_and_our_response() -> None:
    dialog, _ = uas_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert not dialog.is_uac
    assert dialog.id == DialogId("a84b4c76e66710", "bob-tag", "1928301774")
    # 12.1.1: Record-Route in order, remote target from the request's Contact.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_seq == 314159 and dialog.local_seq is None
    assert str(dialog.local_contact) == "<sip:bob@192.0.2.4>"
    # Our first request picks a CSeq; From/To are swapped relative to the INVITE.
    bye = dialog.create_request("BYE")
    assert bye.from_.tag == "bob-tag" and bye.to.tag == "1928301774"
    assert str(bye.from_.uri) == "sip:bob@biloxi.example.com"
    assert 1 <= bye.cseq.num < 2**31
    assert dialog.create_request("INFO").cseq.num == bye.cseq.num + 1
    assert [str(r.uri) for r in bye.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]


def test_uas_early_dialog_confirmed() -> None:
    invite = parse_request(INCOMING_INVITE)
    ringing = make_response(invite, 180, to_tag="bob-tag")
    dialog = Dialog.create_uas(invite, ringing)
    assert dialog.state is DialogState.EARLY
    dialog.confirm()
    assert dialog.state is DialogState.CONFIRMED
    with pytest.raises(DialogError):
        Dialog.create_uas(invite, make_response(invite, 180))  # no To tag


def test_out_of_order_remote_cseq_rejected_with_500() -> None:
    dialog, _ = uas_dialog()
    assert dialog.receive_request(incoming("INFO", 314160)) is None
    assert dialog.remote_seq == 314160
    assert dialog.receive_request(incoming("INFO", 314150)) == 500
    assert dialog.remote_seq == 314160
    # ACK and CANCEL reuse the INVITE's CSeq and are never out of order.
    assert dialog.receive_request(incoming("ACK", 314159)) is None


def test_incoming_reinvite_refreshes_target_and_bye_ends() -> None:
    dialog, _ = uas_dialog()
    reinvite = incoming("INVITE", 314160, contact="<sip:alice@new.atlanta.example.com>")
    assert dialog.matches_request(reinvite)
    assert dialog.receive_request(reinvite) is None
    assert str(dialog.remote_target) == "sip:alice@new.atlanta.example.com"
    info = incoming("INFO", 314161, contact="<sip:ignored@example.com>")
    dialog.receive_request(info)
    assert str(dialog.remote_target) == "sip:alice@new.atlanta.example.com"
    dialog.receive_request(incoming("BYE", 314162))
    assert dialog.terminated


def test_dialogs_registry_finds_by_direction() -> None:
    dialogs = Dialogs()
    uas, _ = uas_dialog()
    uac = uac_dialog()
    dialogs.add(uas)
    dialogs.add(uac)
    assert dialogs.for_request(incoming("BYE", 314170)) is uas
    assert dialogs.for_response(response(200)) is uac
    assert dialogs.for_response(response(200, to_tag="other-fork")) is None
    dialogs.remove(uac)
    assert len(dialogs) == 1 and list(dialogs) == [uas]


def test_next_hop_defaults_and_parameters() -> None:
    loose = uac_dialog()
    assert loose.next_hop() == (("p1.example.com", 5060), "UDP")
    assert next_hop(loose.create_request("BYE")) == loose.next_hop()
    dialog = uac_dialog(record_routes=())
    bye = dialog.create_request("BYE")
    assert next_hop(bye) == (("client.biloxi.example.com", 5060), "UDP")
    assert dialog.next_hop(default_transport="TCP") == (("client.biloxi.example.com", 5060), "TCP")
    bye.uri = "sip:bob@[2001:db8::1]:5070;transport=tcp"
    assert next_hop(bye) == (("2001:db8::1", 5070), "TCP")
    bye.uri = "sips:bob@example.com"
    assert next_hop(bye) == (("example.com", 5061), "TLS")


# -- UAS 2xx retransmission ----------------------------------------------------------------


def test_2xx_retransmitted_until_ack_capped_at_t2() -> None:
    invite = parse_request(INCOMING_INVITE)
    ok = make_response(invite, 200, to_tag="bob-tag")
    retransmission = AnswerRetransmission(ok, now=0.0, reliable=False)
    times = []
    while (deadline := retransmission.get_timer()) is not None and deadline < 12:
        if retransmission.handle_timer(deadline) is ok:
            times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert not retransmission.ack_received(incoming("ACK", 1))
    assert retransmission.ack_received(incoming("ACK", 314159))
    assert retransmission.get_timer() is None


def test_2xx_without_ack_times_out_after_64_t1() -> None:
    invite = parse_request(INCOMING_INVITE)
    ok = make_response(invite, 200, to_tag="bob-tag")
    retransmission = AnswerRetransmission(ok, now=0.0, reliable=True, timers=TimerConfig(t1=0.1))
    assert retransmission.get_timer() == pytest.approx(6.4)  # nothing re-sent on TCP
    assert retransmission.handle_timer(6.4) is None
    assert retransmission.timed_out


def test_dialog_keeps_addresses_as_text_and_hands_out_copies() -> None:
    dialog = uac_dialog()
    # Reads are fresh objects: changing one does not change the dialog ...
    target = dialog.remote_target
    target.host = "elsewhere.example.com"
    assert str(dialog.remote_target) == "sip:bob@client.biloxi.example.com"
    # ... assigning does, with a typed value or with text.
    dialog.remote_target = "sip:bob@moved.example.com"
    dialog.local_uri = '"Alice A." <sip:alice@atlanta.example.com>'
    bye = dialog.create_request("BYE", via=new_via("UDP", "client.atlanta.example.com", 5060))
    assert str(bye.uri) == "sip:bob@moved.example.com"
    assert bye.from_.display == "Alice A." and bye.from_.tag == dialog.local_tag
    assert bye.to.tag == dialog.remote_tag
    # Every field round-trips through its text (what the calls journal stores).
    copy = Dialog(dialog.call_id, dialog.local_tag, dialog.remote_tag, str(dialog.local_uri),
                  str(dialog.remote_uri), str(dialog.remote_target),
                  [str(r) for r in dialog.route_set], dialog.local_seq, None, True,
                  DialogState.CONFIRMED, local_contact=str(dialog.local_contact))
    again = copy.create_request("BYE", via=new_via("UDP", "client.atlanta.example.com", 5060))
    assert [str(r) for r in again.routes] == [str(r) for r in bye.routes]
    assert str(again.uri) == str(bye.uri) and again.cseq.num == bye.cseq.num + 1


def test_creating_a_dialog_caches_no_route_in_the_request_kept_by_the_call() -> None:
    dialog, invite = uas_dialog()
    assert [str(route.uri) for route in dialog.route_set] == [
        str(route.uri) for route in parse_request(INCOMING_INVITE).record_routes]
    assert dialog.route_set  # the request has Record-Routes to cache, or this proves nothing
    assert "record-route" not in invite.headers._typed
