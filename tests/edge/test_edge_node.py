"""The edge and registrar roles in a real node on the embedded defaults (local bus, embedded
store): real phones register with digest; the guards behave as Kazoo's Kamailio does."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.sip import DigestChallenge, DigestClient
from protocols.sip.digest import retry_with_credentials
from tests.edge.conftest import (
    BaresipPhone,
    EdgeNode,
    PjsuaPhone,
    provisioned_edge_node,
    wait_until,
)
from tests.edge.sipclient import SipProbe

pytestmark = pytest.mark.timeout(300)

REALM = "pbx.example.com"
USERS = {f"{n}": f"secret-{n}" for n in range(1000, 1010)}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeNode]:
    yield from provisioned_edge_node(tmp_path_factory.mktemp("edge"), REALM, USERS)


def test_real_phones_register_with_digest_and_are_listed(edge: EdgeNode, tmp_path: Path) -> None:
    udp_phone = PjsuaPhone(edge, "1000", USERS["1000"], transport="udp")
    tcp_phone = PjsuaPhone(edge, "1001", USERS["1001"], transport="tcp")
    baresip = BaresipPhone(edge, tmp_path, "1002", USERS["1002"])
    try:
        for phone in (udp_phone, tcp_phone):
            result = phone.registration_result()
            assert result is not None and result["code"] == 200, phone.events
            assert 300 <= result["expires"] <= 600
        wanted = {f"1000@{REALM}", f"1001@{REALM}", f"1002@{REALM}"}
        wait_until(lambda: wanted <= edge.registered_aors(), timeout=30,
                   what=f"registrations listing {wanted}; baresip said:\n{baresip.output()}")
        rows = {row["aor"]: row for row in edge.registrations()}
        assert rows[f"1000@{REALM}"]["transport"] == "UDP"
        assert rows[f"1001@{REALM}"]["transport"] == "TCP"
        assert rows[f"1000@{REALM}"]["user_agent"] == "pjsua2-mirliton-test"
        assert "baresip" in rows[f"1002@{REALM}"]["user_agent"].lower()
        for row in rows.values():
            assert row["source_ip"] == "127.0.0.1" and row["source_port"] > 0
            assert 0 < row["expires"] <= 600
        assert "200 OK" in baresip.output()
    finally:
        udp_phone.stop()
        tcp_phone.stop()
        baresip.stop()
    # pjsua unregisters on the way out (Expires: 0): its bindings are gone.
    wait_until(lambda: not ({f"1000@{REALM}", f"1001@{REALM}"} & edge.registered_aors()),
               timeout=20, what="unregistration of the pjsua phones")


def test_wrong_password_is_challenged_then_locked_out(edge: EdgeNode) -> None:
    phone = PjsuaPhone(edge, "1003", "not-the-password")
    try:
        result = phone.registration_result()
        assert result is not None and result["code"] == 401, phone.events
    finally:
        phone.stop()
    with SipProbe(edge.edge) as probe:
        answers = []
        for _ in range(4):
            first, second = probe.register_with_password("1004", REALM, "wrong-password")
            assert first is not None and first.status == 401
            assert second is not None
            answers.append(second)
        assert [r.status for r in answers] == [401, 401, 401, 403]
        assert answers[-1].headers.get("retry-after") == "3600"
        # Locked out: even the right password from this source gets 403 now.
        first, second = probe.register_with_password("1004", REALM, USERS["1004"])
        assert second is not None and second.status == 403
    with SipProbe(edge.edge) as elsewhere:
        # The counter is per user and source address:port; another source is not locked.
        first, second = elsewhere.register_with_password("1004", REALM, USERS["1004"])
        assert second is not None and second.status == 200


def test_success_clears_the_failure_count(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        for _ in range(3):
            _, second = probe.register_with_password("1005", REALM, "wrong-password")
            assert second is not None and second.status == 401
        _, ok = probe.register_with_password("1005", REALM, USERS["1005"])
        assert ok is not None and ok.status == 200
        statuses = []
        for _ in range(3):
            _, second = probe.register_with_password("1005", REALM, "wrong-password")
            assert second is not None
            statuses.append(second.status)
        assert statuses == [401, 401, 401]


def _challenge_shape(response: object) -> tuple[str, str, tuple[str, ...], bool]:
    challenge = DigestChallenge.parse(response.headers.get("www-authenticate"))  # type: ignore[attr-defined]
    return challenge.realm, challenge.algorithm, challenge.qop, challenge.stale


def test_unknown_user_gets_the_same_challenge_as_a_known_one(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        known = probe.exchange(probe.register("1006", REALM))
        unknown = probe.exchange(probe.register("no-such-user", REALM))
        assert known is not None and unknown is not None
        assert (known.status, known.reason) == (unknown.status, unknown.reason) == (401, "Unauthorized")
        assert _challenge_shape(known) == _challenge_shape(unknown)
        assert sorted(k for k, _ in known.headers) == sorted(k for k, _ in unknown.headers)
        # With (wrong) credentials both are challenged again: nothing tells them apart.
        _, known_again = probe.register_with_password("1006", REALM, "guess")
        _, unknown_again = probe.register_with_password("no-such-user", REALM, "guess")
        assert known_again is not None and unknown_again is not None
        assert known_again.status == unknown_again.status == 401
        assert _challenge_shape(known_again) == _challenge_shape(unknown_again)


def test_scanners_and_ip_domains_get_no_reply(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        for agent in ("friendly-scanner", "sipcli/v1.8", "sundayddr", "PortSIP VoIP SDK"):
            assert probe.exchange(probe.register("1007", REALM, user_agent=agent), timeout=1.0) is None
            options = probe.request("OPTIONS", f"sip:{REALM}", from_uri=f"sip:100@{REALM}",
                                    user_agent=agent)
            assert probe.exchange(options, timeout=1.0) is None
        # The traffic filter: a REGISTER to an IP-literal domain is a scanner's.
        assert probe.exchange(probe.register("1007", "192.0.2.10"), timeout=1.0) is None
        # The same source is still served once it behaves.
        answer = probe.exchange(probe.request("OPTIONS", f"sip:{REALM}", from_uri=f"sip:x@{REALM}"))
        assert answer is not None and (answer.status, answer.reason) == (200, "Rawr!!")


def test_flood_from_one_source_is_mostly_dropped_while_another_is_served(edge: EdgeNode) -> None:
    flooder = SipProbe(edge.edge, bind_host="127.0.0.3")
    served = SipProbe(edge.edge, bind_host="127.0.0.2")
    try:
        sent = 0
        start = time.monotonic()
        # 200 requests per second for 2 seconds from 127.0.0.3.
        while sent < 400:
            flooder.send(flooder.register("1008", REALM))
            sent += 1
            next_send = start + sent / 200.0
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        answered = flooder.drain(quiet=1.0)
        assert answered < sent / 2, f"{answered} of {sent} flood requests were answered"
        assert answered > 0  # the first ones, under the limit, were answered
        # Another source is served as usual, with digest, during the block of the first.
        first, second = served.register_with_password("1008", REALM, USERS["1008"])
        assert first is not None and first.status == 401
        assert second is not None and second.status == 200
        phone = PjsuaPhone(edge, "1009", USERS["1009"], bind="127.0.0.2")
        try:
            result = phone.registration_result()
            assert result is not None and result["code"] == 200
        finally:
            phone.stop()
    finally:
        flooder.close()
        served.close()


def test_nat_source_address_and_rport_are_recorded_and_used(edge: EdgeNode) -> None:
    from bus import connect
    from bus.api.registration import reg_query

    with SipProbe(edge.edge) as probe:
        # A phone behind NAT advertises its private address; the edge records where the
        # REGISTER really came from and reaches the phone there.
        first, second = probe.register_with_password(
            "1006", REALM, USERS["1006"], contact="<sip:1006@10.20.30.40:5062>")
        assert second is not None and second.status == 200
        # The answer reached us: it went to the source address, not to the Via sent-by.
        assert second.via.received == "127.0.0.1" and second.via.rport == probe.address[1]
        host, port = probe.address
    row = next(r for r in edge.registrations() if r["aor"] == f"1006@{REALM}")
    assert row["original_contact"] == "<sip:1006@10.20.30.40:5062>"
    assert row["contact"] == f"sip:1006@{host}:{port}"
    assert (row["source_ip"], row["source_port"]) == (host, port)
    bus = connect("local", node="test-nat", data_dir=edge.node.data_dir)
    try:
        replies = bus.collect(reg_query.build(realm=REALM, username="1006"), timeout=2.0,
                              until=lambda rs: any(r.get("Fields") for r in rs))
    finally:
        bus.close()
    fields = [f for r in replies for f in r.get("Fields") or []]
    assert fields and fields[0]["Contact"] == f"sip:1006@{host}:{port}"
    assert fields[0]["Source-Port"] == port


def test_expiry_limits_several_contacts_and_unregister(edge: EdgeNode) -> None:
    aor = f"1007@{REALM}"
    with SipProbe(edge.edge) as desk, SipProbe(edge.edge) as soft:
        _, too_brief = desk.register_with_password("1007", REALM, USERS["1007"], expires=60)
        assert too_brief is not None and too_brief.status == 423
        assert too_brief.headers.get("min-expires") == "300"
        _, capped = desk.register_with_password("1007", REALM, USERS["1007"], expires=100000)
        assert capped is not None and capped.status == 200
        assert capped.contact is not None and capped.contact.expires == 3600
        _, defaulted = soft.register_with_password("1007", REALM, USERS["1007"], expires=None)
        assert defaulted is not None and defaulted.status == 200
        contacts = {str(c.uri): c.expires for c in defaulted.contacts}
        assert len(contacts) == 2 and sorted(contacts.values()) == [600, 3600]
        assert len([r for r in edge.registrations() if r["aor"] == aor]) == 2
        # Contact: * with Expires: 0 removes every binding of the AOR.
        request = desk.register("1007", REALM, contact="*", expires=0)
        challenge = desk.exchange(request)
        assert challenge is not None and challenge.status == 401
        removed = desk.exchange(retry_with_credentials(request, challenge,
                                                       DigestClient("1007", USERS["1007"])))
        assert removed is not None and removed.status == 200 and not removed.contacts
    assert aor not in edge.registered_aors()


def test_password_change_flushes_the_registration(edge: EdgeNode) -> None:
    from actors.registrar.devices import find_device
    from store import open_store
    from store.kazoo import account_db_name

    user, old, new = "1005", USERS["1005"], "changed-secret"
    with SipProbe(edge.edge) as probe:
        _, ok = probe.register_with_password(user, REALM, old)
        assert ok is not None and ok.status == 200
        assert f"{user}@{REALM}" in edge.registered_aors()
        store = open_store("embedded", edge.node.data_dir)
        try:
            db = account_db_name(edge.account_id)
            device = find_device(store, db, user)
            assert device is not None
            device["sip"]["password"] = new
            store.put(db, device)
        finally:
            store.close()
        # The registrar sees the change and publishes reg_flush: the binding goes, and the
        # edge forgets the cached password.
        wait_until(lambda: f"{user}@{REALM}" not in edge.registered_aors(), timeout=20,
                   what="reg_flush after the password change")
        _, refused = probe.register_with_password(user, REALM, old)
        assert refused is not None and refused.status == 401
        _, accepted = probe.register_with_password(user, REALM, new)
        assert accepted is not None and accepted.status == 200
    USERS[user] = new


def test_metrics_are_exported(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        probe.register_with_password("1006", REALM, USERS["1006"])

    def scrape() -> str:
        url = f"http://127.0.0.1:{edge.node.ops_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    text = scrape()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mirliton_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['mirliton_sip_requests_total{method="REGISTER"}'] > 0
    assert values['mirliton_sip_responses_total{class="2xx"}'] > 0
    assert values['mirliton_sip_responses_total{class="4xx"}'] > 0
    assert values["mirliton_registrations"] >= 1
    assert values['mirliton_edge_dropped_total{reason="scanner"}'] > 0
    assert values['mirliton_edge_dropped_total{reason="flood"}'] > 0
    assert values["mirliton_edge_auth_failures_total"] > 0


def test_registrations_cli_human_output(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        probe.register_with_password("1006", REALM, USERS["1006"])
    out = edge.node.cli("registrations").stdout
    assert f"1006@{REALM}" in out and "expires=" in out
    rows = json.loads(edge.node.cli("registrations", "--json", "--realm", REALM).stdout)
    assert all(row["aor"].endswith("@" + REALM) for row in rows) and rows


def test_log_lines_about_a_registration_carry_its_call_id(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        request = probe.register("1006", REALM, contact="<sip:1006@10.9.9.9:5060>")
        challenge = probe.exchange(request)
        assert challenge is not None and challenge.status == 401
        answer = probe.exchange(retry_with_credentials(request, challenge,
                                                       DigestClient("1006", USERS["1006"])))
        assert answer is not None and answer.status == 200
    lines = wait_until(
        lambda: [line for line in edge.node.log_text().splitlines()
                 if "REGISTER 1006@" in line and "10.9.9.9" not in line and request.call_id in line],
        timeout=10, what="the registration's log line")
    assert all(f"call_id={request.call_id}" in line for line in lines)


def test_device_create_refuses_duplicates_and_unknown_accounts(edge: EdgeNode) -> None:
    duplicate = edge.node.cli("device", "create", "--account", edge.account_id, "--name", "again",
                              "--username", "1000", "--password", "whatever1", "--json",
                              check=False)
    assert duplicate.returncode == 1
    assert json.loads(duplicate.stdout)["error"] == "validation_failed"
    unknown = edge.node.cli("device", "create", "--account", "0" * 32, "--name", "x",
                            "--username", "7777", "--password", "whatever1", "--json", check=False)
    assert unknown.returncode == 1 and "account_id" in json.loads(unknown.stdout)["errors"]
    created = json.loads(edge.node.cli("device", "create", "--account", edge.account_id,
                                       "--name", "new phone", "--username", "1010",
                                       "--password", "secret-1010", "--json").stdout)
    assert created["realm"] == REALM and created["username"] == "1010"
    # Usable at once: the edge had no cached answer for this user.
    with SipProbe(edge.edge) as probe:
        _, answer = probe.register_with_password("1010", REALM, "secret-1010")
        assert answer is not None and answer.status == 200


def test_max_forwards_zero_gets_483_except_options(edge: EdgeNode) -> None:
    with SipProbe(edge.edge) as probe:
        request = probe.register("1006", REALM)
        request.headers.replace("Max-Forwards", "0")
        answer = probe.exchange(request)
        assert answer is not None and answer.status == 483
        options = probe.request("OPTIONS", f"sip:{REALM}", from_uri=f"sip:x@{REALM}")
        options.headers.replace("Max-Forwards", "0")
        answer = probe.exchange(options)
        assert answer is not None and answer.status == 200


def test_reg_success_is_published(edge: EdgeNode) -> None:
    import gevent.event

    from bus import Binding, connect

    received: list[dict[str, object]] = []
    arrived = gevent.event.Event()
    bus = connect("local", node="test-reg-success", data_dir=edge.node.data_dir)
    try:
        def on_message(msg: dict[str, object], _delivery: object) -> None:
            received.append(msg)
            arrived.set()

        consumer = bus.consume([Binding("registrar", "registration.success.#")], on_message)
        with SipProbe(edge.edge) as probe:
            _, answer = probe.register_with_password("1009", REALM, USERS["1009"],
                                                     contact="<sip:1009@10.7.7.7:5060>")
            assert answer is not None and answer.status == 200
            host, port = probe.address
        arrived.wait(10)
        consumer.cancel()
    finally:
        bus.close()
    mine = [m for m in received if m.get("Username") == "1009"]
    assert mine, received
    msg = mine[0]
    assert msg["Event-Name"] == "reg_success" and msg["Realm"] == REALM
    assert msg["Contact"] == f"sip:1009@{host}:{port}"  # reachable: the NAT source
    assert msg["Original-Contact"] == "<sip:1009@10.7.7.7:5060>"
    assert (msg["Source-IP"], msg["Source-Port"]) == (host, port)
    assert msg["First-Registration"] is True
    assert isinstance(msg["Expires"], int) and 0 < msg["Expires"] <= 600
