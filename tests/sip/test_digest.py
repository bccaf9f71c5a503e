from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.sip.digest import (
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestOutcome,
    DigestParseError,
    DigestServer,
    answer_challenge,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_auth_params,
    retry_with_credentials,
)
from protocols.sip.message import Request, make_response
from protocols.sip.parser import parse_message

# RFC 2617 section 3.5 (the Authorization header, as printed in the RFC).
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
    'qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 section 3.9.1 (note the password differs in case from RFC 2617's).
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}

NOW = 1_800_000_000.0
SECRET = b"cluster-wide digest secret"


_SALTS = itertools.count()


def counter_random(size: int) -> bytes:
    """Deterministic nonce salts so test failures reproduce."""
    return next(_SALTS).to_bytes(size, "big")


def test_rfc2617_known_answer() -> None:
    credentials = DigestCredentials.parse(RFC2617_AUTHORIZATION)
    assert credentials.username == "Mufasa"
    assert credentials.qop == "auth" and credentials.nc == "00000001"
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        ha1=ha1,
        algorithm=None,
        method="GET",
        uri=credentials.uri,
        nonce=credentials.nonce,
        qop="auth",
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert response == "6629fae49393a05397450978507c4ef1"
    # The client side builds exactly the RFC's header from the RFC's challenge.
    challenge = DigestChallenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == ("auth", "auth-int")
    answered = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert answered.response == "6629fae49393a05397450978507c4ef1"
    assert answered.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_known_answers(algorithm: str) -> None:
    challenge = DigestChallenge(
        realm=RFC7616["realm"],
        nonce=RFC7616["nonce"],
        algorithm=algorithm,
        qop=("auth", "auth-int"),
        opaque=RFC7616["opaque"],
    )
    credentials = answer_challenge(
        challenge,
        method="GET",
        uri=RFC7616["uri"],
        username=RFC7616["username"],
        password=RFC7616["password"],
        cnonce=RFC7616["cnonce"],
    )
    assert credentials.response == RFC7616_RESPONSES[algorithm]
    parsed = DigestCredentials.parse(credentials.to_header_value())
    assert parsed == credentials


def test_parse_auth_params_quoting_and_escapes() -> None:
    scheme, params = parse_auth_params(
        'Digest  username="a\\"b\\\\c",realm = "x, y" ,nc=00000001,  qop=auth'
    )
    assert scheme == "Digest"
    assert params == {"username": 'a"b\\c', "realm": "x, y", "nc": "00000001", "qop": "auth"}
    # And back: a username with a quote and backslash survives a round trip.
    credentials = DigestCredentials(
        username='a"b\\c', realm="x, y", nonce="n", uri="sip:x", response="r"
    )
    assert DigestCredentials.parse(str(credentials)) == credentials


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="unterminated',
        "Digest realm",
        'Digest realm="a" nonce="b"',
        "",
        'Digest username="a", realm="r"',  # missing nonce/uri/response
    ],
)
def test_malformed_credentials(value: str) -> None:
    with pytest.raises(DigestParseError):
        DigestCredentials.parse(value)


def server(**kwargs: object) -> DigestServer:
    return DigestServer(SECRET, random_bytes=counter_random, **kwargs)  # type: ignore[arg-type]


def register_credentials(
    challenge: DigestChallenge, password: str = "secret1000", nc: int = 1
) -> DigestCredentials:
    return answer_challenge(
        challenge,
        method="REGISTER",
        uri="sip:example.com",
        username="1000",
        password=password,
        cnonce="c0ffee",
        nonce_count=nc,
    )


def test_server_challenges_sha256_then_md5_with_one_nonce() -> None:
    headers = server().challenge_headers("example.com", NOW)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    first, second = (DigestChallenge.parse(value) for _, value in headers)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.qop == ("auth",)
    assert not first.stale
    proxy = server().challenge_headers("example.com", NOW, proxy=True, stale=True)
    assert proxy[0][0] == "Proxy-Authenticate"
    assert "stale=true" in proxy[0][1]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_server_accepts_correct_password_and_ha1(algorithm: str) -> None:
    digest_server = server(algorithms=(algorithm,))
    (challenge,) = digest_server.challenges("example.com", NOW)
    credentials = register_credentials(challenge)
    verdict = digest_server.verify(
        str(credentials), method="REGISTER", now=NOW + 1, password="secret1000"
    )
    assert verdict.ok and verdict.username == "1000" and verdict.realm == "example.com"
    base = algorithm.removesuffix("-sess")
    ha1 = compute_ha1("1000", "example.com", "secret1000", base)
    again = register_credentials(challenge, nc=2)
    assert digest_server.verify(again, method="REGISTER", now=NOW + 2, ha1=ha1).ok
    third = register_credentials(challenge, nc=3)
    assert digest_server.verify(third, method="REGISTER", now=NOW + 3, ha1={base: ha1}).ok


def test_wrong_password_rejected() -> None:
    digest_server = server()
    challenge = digest_server.challenges("example.com", NOW)[0]
    credentials = register_credentials(challenge, password="guess")
    verdict = digest_server.verify(credentials, method="REGISTER", now=NOW, password="secret1000")
    assert verdict.outcome is DigestOutcome.WRONG_RESPONSE
    # A different method with the same digest also fails (A2 covers the method).
    good = register_credentials(challenge)
    verdict = digest_server.verify(good, method="INVITE", now=NOW, password="secret1000")
    assert verdict.outcome is DigestOutcome.WRONG_RESPONSE


def test_expired_nonce_is_stale_only_with_the_right_password() -> None:
    digest_server = server(nonce_lifetime=300.0)
    challenge = digest_server.challenges("example.com", NOW)[0]
    late = NOW + 301
    verdict = digest_server.verify(
        register_credentials(challenge), method="REGISTER", now=late, password="secret1000"
    )
    assert verdict.stale and verdict.outcome is DigestOutcome.STALE_NONCE
    wrong = digest_server.verify(
        register_credentials(challenge, password="x"),
        method="REGISTER",
        now=late,
        password="secret1000",
    )
    assert wrong.outcome is DigestOutcome.WRONG_RESPONSE


def test_nonce_validated_statelessly_by_another_server_with_the_same_secret() -> None:
    issuer = server()
    challenge = issuer.challenges("example.com", NOW)[0]
    other_node = DigestServer(SECRET)
    assert other_node.verify(
        register_credentials(challenge), method="REGISTER", now=NOW, password="secret1000"
    ).ok
    foreign = DigestServer(b"another secret")
    verdict = foreign.verify(
        register_credentials(challenge), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.INVALID_NONCE


def test_nonce_bound_to_realm_and_tamper_evident() -> None:
    digest_server = server()
    challenge = digest_server.challenges("tenant-a.example.com", NOW)[0]
    moved = DigestChallenge(realm="tenant-b.example.com", nonce=challenge.nonce)
    verdict = digest_server.verify(
        register_credentials(moved), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.INVALID_NONCE
    assert digest_server.nonce_issued_at(challenge.nonce, "tenant-a.example.com") == NOW
    flipped = challenge.nonce[:-2] + ("AA" if challenge.nonce[-2:] != "AA" else "BB")
    assert digest_server.nonce_issued_at(flipped, "tenant-a.example.com") is None
    assert digest_server.nonce_issued_at("garbage!", "tenant-a.example.com") is None
    padded = challenge.nonce[:5] + "!" + challenge.nonce[5:]
    assert digest_server.nonce_issued_at(padded, "tenant-a.example.com") is None
    # A nonce claiming to come from the future is not ours either.
    future = digest_server.challenges("tenant-a.example.com", NOW + 3600)[0]
    verdict = digest_server.verify(
        register_credentials(future), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.INVALID_NONCE


def test_nonce_count_replay_rejected() -> None:
    digest_server = server()
    challenge = digest_server.challenges("example.com", NOW)[0]
    first = register_credentials(challenge, nc=1)
    assert digest_server.verify(first, method="REGISTER", now=NOW, password="secret1000").ok
    replay = digest_server.verify(first, method="REGISTER", now=NOW, password="secret1000")
    assert replay.outcome is DigestOutcome.REPLAYED_NONCE_COUNT
    skipped_ahead = register_credentials(challenge, nc=5)
    assert digest_server.verify(skipped_ahead, method="REGISTER", now=NOW, password="secret1000").ok
    going_back = register_credentials(challenge, nc=3)
    verdict = digest_server.verify(going_back, method="REGISTER", now=NOW, password="secret1000")
    assert verdict.outcome is DigestOutcome.REPLAYED_NONCE_COUNT


def test_nonce_count_cache_is_bounded() -> None:
    digest_server = server(nonce_count_cache_size=2)
    challenges = [digest_server.challenges("example.com", NOW)[0] for _ in range(3)]
    for challenge in challenges:
        assert digest_server.verify(
            register_credentials(challenge), method="REGISTER", now=NOW, password="secret1000"
        ).ok
    assert len(digest_server._nonce_counts) == 2
    # The most recent nonces still detect replays.
    verdict = digest_server.verify(
        register_credentials(challenges[-1]), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.REPLAYED_NONCE_COUNT


def test_policy_checks() -> None:
    digest_server = server(algorithms=("SHA-256",), require_qop=True)
    challenge = digest_server.challenges("example.com", NOW)[0]
    md5 = DigestChallenge(realm="example.com", nonce=challenge.nonce, algorithm="MD5")
    verdict = digest_server.verify(
        register_credentials(md5), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.UNSUPPORTED_ALGORITHM
    no_qop = DigestChallenge(
        realm="example.com", nonce=challenge.nonce, algorithm="SHA-256", qop=()
    )
    verdict = digest_server.verify(
        register_credentials(no_qop), method="REGISTER", now=NOW, password="secret1000"
    )
    assert verdict.outcome is DigestOutcome.QOP_REQUIRED
    good = register_credentials(challenge)
    assert (
        digest_server.verify(
            good, method="REGISTER", now=NOW, password="secret1000", realm="other.com"
        ).outcome
        is DigestOutcome.WRONG_REALM
    )
    assert (
        digest_server.verify(
            good, method="REGISTER", now=NOW, password="secret1000", request_uri="sip:else"
        ).outcome
        is DigestOutcome.URI_MISMATCH
    )
    assert digest_server.verify(good, method="REGISTER", now=NOW).outcome is DigestOutcome.NO_SECRET
    assert (
        digest_server.verify("Basic Zm9vOmJhcg==", method="REGISTER", now=NOW).outcome
        is DigestOutcome.MALFORMED
    )


def test_rfc2069_answer_without_qop_accepted_by_default() -> None:
    digest_server = server(algorithms=("MD5",))
    challenge = digest_server.challenges("example.com", NOW)[0]
    legacy = DigestChallenge(realm="example.com", nonce=challenge.nonce, qop=())
    credentials = register_credentials(legacy)
    assert credentials.qop is None and credentials.nc is None and credentials.cnonce is None
    assert digest_server.verify(credentials, method="REGISTER", now=NOW, password="secret1000").ok


def test_auth_int_covers_the_body() -> None:
    challenge = DigestChallenge(realm="r", nonce="n", qop=("auth-int",))
    credentials = answer_challenge(
        challenge, method="INVITE", uri="sip:b@r", username="a", password="p", body=b"v=0\r\n"
    )
    assert credentials.qop == "auth-int"
    digest_server = DigestServer(SECRET, qop=("auth-int",))
    nonce = digest_server.make_nonce("r", NOW)
    challenge = DigestChallenge(realm="r", nonce=nonce, qop=("auth-int",))
    credentials = answer_challenge(
        challenge, method="INVITE", uri="sip:b@r", username="a", password="p", body=b"v=0\r\n"
    )
    assert digest_server.verify(
        credentials, method="INVITE", now=NOW, password="p", body=b"v=0\r\n"
    ).ok
    tampered = digest_server.verify(
        answer_challenge(
            challenge,
            method="INVITE",
            uri="sip:b@r",
            username="a",
            password="p",
            body=b"v=0\r\n",
            nonce_count=2,
        ),
        method="INVITE",
        now=NOW,
        password="p",
        body=b"v=1\r\n",
    )
    assert tampered.outcome is DigestOutcome.WRONG_RESPONSE


def test_client_picks_first_supported_challenge_and_counts() -> None:
    digest_server = server()
    values = [v for _, v in digest_server.challenge_headers("example.com", NOW)]
    chosen = choose_challenge(['Digest realm="x", nonce="y", algorithm=UNKNOWN-HASH', *values])
    assert chosen.algorithm == "SHA-256"
    with pytest.raises(DigestParseError):
        choose_challenge(['Basic realm="x"'])
    client = DigestClient("1000", "secret1000")
    first = client.authorize(values, method="REGISTER", uri="sip:example.com")
    second = client.authorize(values, method="REGISTER", uri="sip:example.com")
    assert (first.nc, second.nc) == ("00000001", "00000002")
    assert first.algorithm == "SHA-256"
    for credentials in (first, second):
        assert digest_server.verify(
            credentials, method="REGISTER", now=NOW, password="secret1000"
        ).ok


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=24
)


@given(username=_text, realm=_text, password=_text, uri=_text)
def test_any_credentials_round_trip_and_verify(
    username: str, realm: str, password: str, uri: str
) -> None:
    digest_server = DigestServer(SECRET)
    challenge = digest_server.challenges(realm, NOW)[0]
    parsed_challenge = DigestChallenge.parse(challenge.to_header_value())
    assert parsed_challenge.realm == realm
    credentials = answer_challenge(
        parsed_challenge, method="INVITE", uri=uri, username=username, password=password
    )
    header = credentials.to_header_value()
    assert DigestCredentials.parse(header) == credentials
    assert digest_server.verify(header, method="INVITE", now=NOW, password=password).ok


REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-reg-1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:1000@example.com>;tag=reg\r\n"
    "To: <sip:1000@example.com>\r\n"
    "Call-ID: reg-1@192.0.2.5\r\n"
    "CSeq: 7 REGISTER\r\n"
    "Contact: <sip:1000@192.0.2.5:5060>\r\n"
    "Expires: 600\r\n"
    "Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("status", "header"), [(401, "Authorization"), (407, "Proxy-Authorization")]
)
def test_retry_with_credentials_against_the_server(status: int, header: str) -> None:
    request = parse_message(REGISTER.encode())
    assert isinstance(request, Request)
    digest_server = server()
    challenge = make_response(request, status, to_tag="registrar")
    for name, value in digest_server.challenge_headers("example.com", NOW, proxy=status == 407):
        challenge.headers.add(name, value)
    client = DigestClient("1000", "secret1000")
    retry = retry_with_credentials(request, challenge, client)
    # RFC 3261 22.2: same dialog identifiers, CSeq + 1, new branch (a new transaction).
    assert retry.call_id == request.call_id and retry.from_.tag == "reg"
    assert (retry.cseq.num, retry.cseq.method) == (8, "REGISTER")
    assert retry.via.branch != request.via.branch and retry.via.has_rport
    assert retry.headers.get("Expires") == "600"
    assert retry.headers.get(header) is not None
    wire = parse_message(retry.to_bytes())
    assert isinstance(wire, Request)
    assert digest_server.verify(
        wire.headers.get(header) or "", method=wire.method, now=NOW, password="secret1000"
    ).ok
    # A second challenge (stale nonce) replaces the credentials for that realm, not adds.
    again = retry_with_credentials(retry, challenge, client)
    assert len(again.headers.get_all(header)) == 1
    assert again.cseq.num == 9
    with pytest.raises(ValueError):
        retry_with_credentials(request, make_response(request, 403), client)
