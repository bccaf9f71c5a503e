"""The edge's guards and registration logic, sans-I/O: time is passed in, nothing is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.edge.bindings import Binding, ExpiryLimits, apply_register, nat_target
from actors.edge.credentials import Credentials, CredentialsCache
from actors.edge.guards import (
    AuthLockout,
    FloodGuard,
    TrustedSources,
    has_ip_literal_domain,
    is_scanner,
)
from actors.edge.sip import parse_listen, salvage_error_response
from mirliton.config import load_config
from protocols.sip import NameAddr, SipParseError, StarContact, parse_message

SCANNERS = load_config(env={}).edge.scanner_user_agents


# -- flood ------------------------------------------------------------------------------------


def test_flood_guard_lets_the_limit_through_then_drops() -> None:
    guard = FloodGuard(limit=50, window=2.0, release=4.0)
    verdicts = [guard.allow("198.51.100.7", 10.0 + i * 0.005) for i in range(200)]
    assert verdicts[:50] == [True] * 50
    assert not any(verdicts[50:])


def test_flood_guard_keeps_blocking_while_the_flood_goes_on() -> None:
    guard = FloodGuard(limit=50, window=2.0, release=4.0)
    now = 0.0
    for _ in range(60):
        guard.allow("198.51.100.7", now)
    # A new window starts, but the source is still flooding: nothing passes.
    passed = 0
    for i in range(400):
        now = 2.0 + i * 0.005  # 200 requests/s for 2 s
        passed += guard.allow("198.51.100.7", now)
    assert passed == 0
    assert guard.blocked("198.51.100.7", now)


def test_flood_guard_releases_once_the_rate_falls() -> None:
    guard = FloodGuard(limit=50, window=2.0, release=4.0)
    for i in range(60):
        guard.allow("198.51.100.7", i * 0.01)
    assert not guard.allow("198.51.100.7", 3.0)  # still blocked (release pending)
    # Quiet for longer than the release time: one request per second passes again.
    assert guard.allow("198.51.100.7", 8.0)
    assert guard.allow("198.51.100.7", 9.0)


def test_flood_guard_is_per_source_and_forgets_idle_sources() -> None:
    guard = FloodGuard(limit=5, window=2.0, release=4.0)
    for i in range(20):
        guard.allow("198.51.100.7", i * 0.01)
    assert not guard.allow("198.51.100.7", 0.5)
    assert guard.allow("198.51.100.8", 0.5)
    for i in range(1000):
        guard.allow(f"10.0.{i // 256}.{i % 256}", 1.0)
    guard.allow("192.0.2.1", 100.0)  # a later request prunes sources idle for long
    assert len(guard) == 1


# -- failed-authentication lockout ------------------------------------------------------------


def test_lockout_after_four_failures_within_the_window() -> None:
    lockout = AuthLockout(threshold=4, window=300.0)
    key = ("1000", "198.51.100.7", 5060)
    assert [lockout.record_failure(key, t) for t in (0.0, 10.0, 20.0)] == [False] * 3
    assert not lockout.locked(key, 25.0)
    assert lockout.record_failure(key, 30.0)
    assert lockout.locked(key, 31.0)
    assert not lockout.locked(("1000", "198.51.100.7", 5062), 31.0)  # per source port
    assert not lockout.locked(("1001", "198.51.100.7", 5060), 31.0)  # per user


def test_lockout_window_slides_and_success_clears() -> None:
    lockout = AuthLockout(threshold=4, window=300.0)
    key = ("1000", "198.51.100.7", 5060)
    for t in (0.0, 1.0, 2.0, 3.0):
        lockout.record_failure(key, t)
    assert lockout.locked(key, 299.0)
    assert not lockout.locked(key, 303.5)  # the failures slid out of the window
    for t in (400.0, 401.0, 402.0):
        lockout.record_failure(key, t)
    lockout.clear(key)  # an authentication succeeded
    assert lockout.failures(key, 403.0) == 0
    for t in (500.0, 501.0, 502.0, 503.0):
        lockout.record_failure(key, t)
    lockout.clear_user("1000")  # a registration flush
    assert not lockout.locked(key, 504.0)


# -- scanners, IP domains, trusted sources ----------------------------------------------------


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipcli/v1.8", "sundayddr", "pplsip",
                                   "NiceGuy", "PortSIP VoIP SDK 11.2", "QNQ", "SIPVicious"])
def test_scanner_user_agents(agent: str) -> None:
    assert is_scanner(agent, SCANNERS)


@pytest.mark.parametrize("agent", [None, "", "Yealink SIP-T46S", "PolycomVVX", "baresip v1.0.0",
                                   "PJSUA v2.15 Linux"])
def test_phone_user_agents_are_not_scanners(agent: str | None) -> None:
    assert not is_scanner(agent, SCANNERS)


def test_ip_literal_domains() -> None:
    assert has_ip_literal_domain("192.0.2.1", "pbx.example.com")
    assert has_ip_literal_domain("pbx.example.com", "[2001:db8::1]")
    assert not has_ip_literal_domain("pbx.example.com", "example.org")
    assert not has_ip_literal_domain(None, "1.example.com")


def test_trusted_sources() -> None:
    trusted = TrustedSources(["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
    assert trusted.contains("10.20.30.40")
    assert trusted.contains("192.0.2.7")
    assert not trusted.contains("192.0.2.8")
    assert trusted.contains("2001:db8::5")
    assert not trusted.contains("not-an-address")
    assert not TrustedSources([]).contains("127.0.0.1")


def test_thresholds_are_configurable() -> None:
    cfg = load_config(env={
        "MIRLITON_EDGE__FLOOD_REQUESTS": "5000",
        "MIRLITON_EDGE__AUTH_FAILURES": "10",
        "MIRLITON_EDGE__TRUSTED_CIDRS": '["127.0.0.0/8"]',
        "MIRLITON_REGISTRAR__MIN_EXPIRES": "60",
    })
    assert cfg.edge.flood_requests == 5000 and cfg.edge.auth_failures == 10
    assert cfg.edge.trusted_cidrs == ["127.0.0.0/8"] and cfg.registrar.min_expires == 60
    assert parse_listen("udp:0.0.0.0:5060") == ("UDP", "0.0.0.0", 5060)
    assert parse_listen("tcp:127.0.0.1:5070") == ("TCP", "127.0.0.1", 5070)
    with pytest.raises(ValueError):
        parse_listen("tls:0.0.0.0:5061")


# -- credentials cache ------------------------------------------------------------------------


def test_credentials_cache_expiry_and_invalidation() -> None:
    cache = CredentialsCache(ttl=7200, negative_ttl=60)
    cache.put(Credentials("a.example.com", "1000", "pw", cached_until=100.0, account_id="acc",
                          device_id="dev1"))
    cache.put(Credentials("a.example.com", "ghost", None, cached_until=50.0))
    assert cache.get("A.example.com", "1000", 99.0) is not None  # case-insensitive
    assert cache.get("a.example.com", "1000", 100.0) is None  # expired
    assert cache.get("a.example.com", "ghost", 10.0) is not None
    assert cache.forget_unknown() == 1
    cache.put(Credentials("a.example.com", "1000", "pw", cached_until=1000.0, device_id="dev1",
                          account_id="acc"))
    assert cache.forget_device("dev1") == 1 and len(cache) == 0
    cache.put(Credentials("a.example.com", "1000", "pw", cached_until=1000.0, account_id="acc"))
    assert cache.forget_account("acc") == 1
    cache.put(Credentials("a.example.com", "1000", "pw", cached_until=1000.0))
    assert cache.forget_user("a.example.com") == 1


# -- registration bindings (RFC 3261 10.3) ----------------------------------------------------

LIMITS = ExpiryLimits(minimum=300, default=600, maximum=3600, max_contacts=3)


def _register(current: dict[str, Binding], contacts: list[str], expires: int | None, *,
              now: float = 1000.0, call_id: str = "call-1", cseq: int = 1,
              source: tuple[str, int] = ("198.51.100.7", 5062)):  # type: ignore[no-untyped-def]
    parsed = [StarContact() if c == "*" else NameAddr.parse(c) for c in contacts]
    return apply_register(current, parsed, expires, call_id=call_id, cseq=cseq, source=source,
                          transport="UDP", user_agent="phone", now=now, limits=LIMITS)


def test_register_default_min_and_max_expires() -> None:
    outcome = _register({}, ["<sip:1000@10.0.0.5:5062>"], None)
    assert outcome.status == 200 and outcome.first_registration
    assert outcome.bindings[0].remaining(1000.0) == 600
    assert _register({}, ["<sip:1000@10.0.0.5:5062>"], 60).status == 423
    capped = _register({}, ["<sip:1000@10.0.0.5:5062>"], 86400)
    assert capped.bindings[0].remaining(1000.0) == 3600
    by_param = _register({}, ["<sip:1000@10.0.0.5:5062>;expires=900"], 60)
    assert by_param.status == 200 and by_param.bindings[0].remaining(1000.0) == 900


def test_register_several_contacts_refresh_and_remove() -> None:
    first = _register({}, ["<sip:1000@10.0.0.5:5062>"], 600)
    current = {b.uri: b for b in first.bindings}
    second = _register(current, ["<sip:1000@10.0.0.6:5062>"], 600, call_id="call-2", now=1010.0)
    assert len(second.bindings) == 2 and not second.first_registration
    current = {b.uri: b for b in second.bindings}
    refresh = _register(current, ["<sip:1000@10.0.0.5:5062>"], 600, cseq=2, now=1100.0)
    assert len(refresh.bindings) == 2 and not refresh.changed
    current = {b.uri: b for b in refresh.bindings}
    gone = _register(current, ["<sip:1000@10.0.0.5:5062>"], 0, cseq=3, now=1200.0)
    assert [b.uri for b in gone.bindings] == ["sip:1000@10.0.0.6:5062"] and gone.removed
    current = {b.uri: b for b in gone.bindings}
    everything = _register(current, ["*"], 0, call_id="call-3", now=1300.0)
    assert everything.status == 200 and everything.bindings == ()
    assert [b.uri for b in everything.removed] == ["sip:1000@10.0.0.6:5062"]


def test_register_out_of_order_and_expired_and_max_contacts() -> None:
    first = _register({}, ["<sip:1000@10.0.0.5:5062>"], 600, cseq=5)
    current = {b.uri: b for b in first.bindings}
    assert _register(current, ["<sip:1000@10.0.0.5:5062>"], 600, cseq=4).status == 500
    # The same REGISTER again (a retransmission): the same answer, nothing changes.
    again = _register(current, ["<sip:1000@10.0.0.5:5062>"], 600, cseq=5, now=1001.0)
    assert again.status == 200 and not again.changed
    assert again.bindings[0].expires_at == first.bindings[0].expires_at
    # Expired bindings do not count.
    later = _register(current, ["<sip:1000@10.0.0.7:5062>"], 600, call_id="c", now=5000.0)
    assert [b.uri for b in later.bindings] == ["sip:1000@10.0.0.7:5062"]
    current = {}
    for i in range(4):
        outcome = _register(current, [f"<sip:1000@10.0.0.{10 + i}:5062>"], 600,
                            call_id=f"c{i}", now=1000.0 + i)
        current = {b.uri: b for b in outcome.bindings}
    assert len(current) == 3 and "sip:1000@10.0.0.10:5062" not in current


def test_nat_target_uses_the_source_address() -> None:
    outcome = _register({}, ["<sip:1000@10.0.0.5:5062;ob>"], 600, source=("203.0.113.9", 40000))
    assert nat_target(outcome.bindings[0]) == "sip:1000@203.0.113.9:40000;ob"
    direct = _register({}, ["<sip:1000@203.0.113.9:40000>"], 600, source=("203.0.113.9", 40000))
    assert nat_target(direct.bindings[0]) == "sip:1000@203.0.113.9:40000"
    restored = Binding.from_doc(outcome.bindings[0].to_doc())
    assert restored == outcome.bindings[0]


# -- sanity: answers to broken requests -------------------------------------------------------

RFC4475 = Path(__file__).resolve().parents[2].parent / "shared/testdata/rfc4475"


@pytest.mark.parametrize(("name", "status"), [("lwsstart.dat", 400), ("badvers.dat", 505),
                                              ("quotbal.dat", 400), ("scalar02.dat", 400)])
def test_salvaged_error_responses_carry_what_routes_them(name: str, status: int) -> None:
    data = (RFC4475 / name).read_bytes()
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    response = salvage_error_response(info.value, data)
    assert response is not None and response.status == status
    assert response.headers.get_all("via") and response.headers.get("call-id")


@pytest.mark.parametrize("name", ["badinv01.dat", "bigcode.dat", "scalarlg.dat"])
def test_unroutable_or_response_messages_get_nothing(name: str) -> None:
    data = (RFC4475 / name).read_bytes()
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert salvage_error_response(info.value, data) is None
