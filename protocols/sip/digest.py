"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), server and client side.

Server side: :class:`DigestServer` issues challenges whose nonce carries its issue time and an
HMAC under a server secret, so any node sharing the secret can validate a nonce without server
state. The only state is a small bounded LRU of the last nonce-count seen per nonce, used to
reject replays when qop=auth is in use.

Client side: :func:`answer_challenge` / :class:`DigestClient` turn a 401/407 challenge into an
Authorization / Proxy-Authorization value (carrier trunks, tests).

Grammar (RFC 7616 section 3.3/3.4, RFC 7235 section 2.1, RFC 3261 section 25.1)::

    challenge      = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param     = token BWS "=" BWS ( token / quoted-string )
    quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    quoted-pair    = "\\" ( HTAB / SP / VCHAR / obs-text )

    response       = <"> < KD ( H(A1), unq(nonce) ":" nc ":" unq(cnonce) ":"
                               unq(qop) ":" H(A2) ) > <">      ; qop present
    response       = <"> < KD ( H(A1), unq(nonce) ":" H(A2) ) > <">   ; RFC 2069 compat
    A1             = unq(username) ":" unq(realm) ":" passwd
    A1 (-sess)     = H( unq(username) ":" unq(realm) ":" passwd ) ":" unq(nonce) ":" unq(cnonce)
    A2 (auth)      = Method ":" request-uri
    A2 (auth-int)  = Method ":" request-uri ":" H(entity-body)
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from protocols.sip.headers import Via
from protocols.sip.message import Request, Response, generate_branch

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestOutcome",
    "DigestParseError",
    "DigestServer",
    "DigestVerdict",
    "answer_challenge",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "format_auth_params",
    "parse_auth_params",
    "retry_with_credentials",
]


class DigestParseError(ValueError):
    """A malformed WWW-Authenticate / Authorization value."""


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),  # noqa: S324 - mandated by RFC 2617
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
try:  # RFC 7616 also defines SHA-512/256; offered only where OpenSSL provides it.
    hashlib.new("sha512_256")
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    name for base in _HASHES for name in (base, f"{base}-sess")
)


def _base_algorithm(algorithm: str) -> tuple[str, bool]:
    """Normalise an algorithm token: ("SHA-256", is_sess). Missing algorithm means MD5."""
    name = (algorithm or "MD5").upper()
    is_sess = name.endswith("-SESS")
    base = name[: -len("-SESS")] if is_sess else name
    if base not in _HASHES:
        raise DigestParseError(f"unsupported digest algorithm {algorithm!r}")
    return base, is_sess


# -- auth-param lists -------------------------------------------------------------------------

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d\\"e"`` into ("Digest", {"a": "b", "c": 'd"e'}).

    Parameter names are lower-cased (they are case-insensitive); quoted values are unescaped.
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if not scheme or any(ch not in _TOKEN_CHARS for ch in scheme):
        raise DigestParseError(f"bad auth scheme in {value!r}")
    params: dict[str, str] = {}
    position, length = 0, len(rest)
    while position < length:
        while position < length and rest[position] in " \t,":
            position += 1
        if position >= length:
            break
        start = position
        while position < length and rest[position] in _TOKEN_CHARS:
            position += 1
        name = rest[start:position].lower()
        while position < length and rest[position] in " \t":
            position += 1
        if not name or position >= length or rest[position] != "=":
            raise DigestParseError(f"expected name=value at {rest[start:]!r}")
        position += 1
        while position < length and rest[position] in " \t":
            position += 1
        if position < length and rest[position] == '"':
            position += 1
            chars: list[str] = []
            while True:
                if position >= length:
                    raise DigestParseError(f"unterminated quoted string in {value!r}")
                char = rest[position]
                if char == "\\" and position + 1 < length:
                    chars.append(rest[position + 1])  # quoted-pair
                    position += 2
                    continue
                position += 1
                if char == '"':
                    break
                chars.append(char)
            params[name] = "".join(chars)
        else:
            start = position
            while position < length and rest[position] not in " \t,":
                position += 1
            params[name] = rest[start:position]
        while position < length and rest[position] in " \t":
            position += 1
        if position < length and rest[position] != ",":
            raise DigestParseError(f"expected ',' at {rest[position:]!r}")
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_params(scheme: str, params: Iterable[tuple[str, str, bool]]) -> str:
    """``scheme name=value, ...`` from (name, value, quoted) triples."""
    parts = [f"{name}={_quote(value) if quoted else value}" for name, value, quoted in params]
    return f"{scheme} " + ", ".join(parts)


# -- challenge and credentials ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate: Digest ...`` value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_header_value(self) -> str:
        params: list[tuple[str, str, bool]] = [("realm", self.realm, True)]
        if self.domain is not None:
            params.append(("domain", self.domain, True))
        params.append(("nonce", self.nonce, True))
        if self.opaque is not None:
            params.append(("opaque", self.opaque, True))
        if self.stale:
            params.append(("stale", "true", False))
        params.append(("algorithm", self.algorithm, False))
        if self.qop:
            params.append(("qop", ",".join(self.qop), True))
        return format_auth_params("Digest", params)

    __str__ = to_header_value

    @classmethod
    def parse(cls, value: str) -> DigestChallenge:
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise DigestParseError(f"not a Digest challenge: {scheme}")
        if "realm" not in params or "nonce" not in params:
            raise DigestParseError("Digest challenge needs realm and nonce")
        known = {"realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain"}
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm", "MD5"),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            domain=params.get("domain"),
            extra={k: v for k, v in params.items() if k not in known},
        )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One ``Authorization`` / ``Proxy-Authorization: Digest ...`` value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_header_value(self) -> str:
        params: list[tuple[str, str, bool]] = [
            ("username", self.username, True),
            ("realm", self.realm, True),
            ("nonce", self.nonce, True),
            ("uri", self.uri, True),
            ("response", self.response, True),
        ]
        if self.algorithm is not None:
            params.append(("algorithm", self.algorithm, False))
        if self.cnonce is not None:
            params.append(("cnonce", self.cnonce, True))
        if self.opaque is not None:
            params.append(("opaque", self.opaque, True))
        if self.qop is not None:
            params.append(("qop", self.qop, False))
        if self.nc is not None:
            params.append(("nc", self.nc, False))
        return format_auth_params("Digest", params)

    __str__ = to_header_value

    @classmethod
    def parse(cls, value: str) -> DigestCredentials:
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise DigestParseError(f"not Digest credentials: {scheme}")
        missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
        if missing:
            raise DigestParseError(f"Digest credentials lack {', '.join(missing)}")
        known = {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce"}
        known |= {"opaque", "qop", "nc"}
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=params.get("algorithm"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=params.get("qop"),
            nc=params.get("nc"),
            extra={k: v for k, v in params.items() if k not in known},
        )


# -- the computation --------------------------------------------------------------------------


def compute_ha1(
    username: str,
    realm: str,
    password: str,
    algorithm: str = "MD5",
) -> str:
    """H(A1) for the non-sess algorithms, the value a user store keeps instead of a password."""
    base, _ = _base_algorithm(algorithm)
    return _HASHES[base](f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    ha1: str,
    algorithm: str | None,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value; ``ha1`` is H(username:realm:password) with the base hash."""
    base, is_sess = _base_algorithm(algorithm or "MD5")
    digest = _HASHES[base]
    if is_sess:
        # RFC 7616 3.4.2: A1 for -sess includes the nonce and cnonce, computed once per session.
        ha1 = digest(f"{ha1}:{nonce}:{cnonce or ''}".encode())
    if qop == "auth-int":
        ha2 = digest(f"{method}:{uri}:{digest(body)}".encode())
    else:
        ha2 = digest(f"{method}:{uri}".encode())
    if qop:
        return digest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return digest(f"{ha1}:{nonce}:{ha2}".encode())


# -- server side ------------------------------------------------------------------------------


class DigestOutcome(enum.Enum):
    OK = "ok"
    STALE_NONCE = "stale_nonce"  # correct digest on an expired nonce: re-challenge stale=true
    INVALID_NONCE = "invalid_nonce"  # not one of ours (bad MAC, wrong realm binding, garbage)
    WRONG_REALM = "wrong_realm"
    URI_MISMATCH = "uri_mismatch"  # the uri parameter is not the Request-URI
    WRONG_RESPONSE = "wrong_response"  # wrong password (or tampered request)
    REPLAYED_NONCE_COUNT = "replayed_nonce_count"
    QOP_REQUIRED = "qop_required"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    MALFORMED = "malformed"
    NO_SECRET = "no_secret"  # caller gave neither password nor an HA1 for this algorithm


@dataclass(frozen=True, slots=True)
class DigestVerdict:
    outcome: DigestOutcome
    username: str | None = None
    realm: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is DigestOutcome.OK

    @property
    def stale(self) -> bool:
        """Re-challenge with ``stale=true``: the user knows the password, the nonce is old."""
        return self.outcome is DigestOutcome.STALE_NONCE


class DigestServer:
    """Stateless-nonce Digest verifier.

    Nonce layout (base64url, no padding): 8-byte issue time in milliseconds, 8 random bytes,
    then the first 16 bytes of HMAC-SHA256(secret, time || random || realm). Binding the realm
    stops a nonce issued for one tenant being used against another.

    ``now`` is always passed in (seconds, wall clock: nonces must make sense on other nodes).
    """

    _NONCE_LENGTH = 8 + 8 + 16

    def __init__(
        self,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        require_qop: bool = False,
        nonce_count_cache_size: int = 4096,
        clock_skew: float = 5.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("a digest server secret must not be empty")
        for algorithm in algorithms:
            _base_algorithm(algorithm)
        self._secret = secret
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = tuple(algorithms)
        self.qop = tuple(qop)
        # RFC 2069-style answers (no qop) cannot be protected against replay within the nonce
        # lifetime; some old phones still send them, so accepting them is a policy choice.
        self.require_qop = require_qop
        self.clock_skew = clock_skew
        self._random_bytes = random_bytes
        self._nonce_counts: OrderedDict[str, int] = OrderedDict()
        self._nonce_count_cache_size = nonce_count_cache_size

    # nonces

    def _mac(self, issued_ms: int, salt: bytes, realm: str) -> bytes:
        message = struct.pack(">Q", issued_ms) + salt + realm.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def make_nonce(self, realm: str, now: float) -> str:
        issued_ms = int(now * 1000)
        salt = self._random_bytes(8)
        raw = struct.pack(">Q", issued_ms) + salt + self._mac(issued_ms, salt, realm)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def nonce_issued_at(self, nonce: str, realm: str) -> float | None:
        """Issue time of a nonce we made for this realm, or None if it is not ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != self._NONCE_LENGTH:
            return None
        # The decoder skips characters outside the alphabet; insist on our exact spelling so
        # one nonce has one text (the nonce-count cache is keyed by it).
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
            return None
        issued_ms = int.from_bytes(raw[:8], "big")
        if not hmac.compare_digest(raw[16:], self._mac(issued_ms, raw[8:16], realm)):
            return None
        return issued_ms / 1000.0

    # challenges

    def challenges(self, realm: str, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per algorithm, strongest first (RFC 8760 section 2.4: a UAS sends one
        WWW-Authenticate per algorithm, in order of preference), sharing one nonce."""
        nonce = self.make_nonce(realm, now)
        return [
            DigestChallenge(realm=realm, nonce=nonce, algorithm=a, qop=self.qop, stale=stale)
            for a in self.algorithms
        ]

    def challenge_headers(
        self, realm: str, now: float, *, proxy: bool = False, stale: bool = False
    ) -> list[tuple[str, str]]:
        """(header name, value) pairs for a 401 (``proxy=False``) or 407 response."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return [(name, c.to_header_value()) for c in self.challenges(realm, now, stale=stale)]

    # verification

    def verify(
        self,
        credentials: DigestCredentials | str,
        *,
        method: str,
        now: float,
        password: str | None = None,
        ha1: str | Mapping[str, str] | None = None,
        realm: str | None = None,
        request_uri: str | None = None,
        body: bytes = b"",
    ) -> DigestVerdict:
        """Check an Authorization value against the user's secret.

        Pass the plain ``password`` or the stored ``ha1`` (a single hex string for the
        credential's base algorithm, or ``{"MD5": ..., "SHA-256": ...}``). ``realm`` is the realm
        we challenged with; ``request_uri``, when given, must equal the ``uri`` parameter
        (RFC 2617 3.2.2.5).
        """
        if isinstance(credentials, str):
            try:
                credentials = DigestCredentials.parse(credentials)
            except DigestParseError:
                return DigestVerdict(DigestOutcome.MALFORMED)
        username, cred_realm = credentials.username, credentials.realm

        def verdict(outcome: DigestOutcome) -> DigestVerdict:
            return DigestVerdict(outcome, username, cred_realm)

        algorithm = credentials.algorithm or "MD5"
        try:
            base, _ = _base_algorithm(algorithm)
        except DigestParseError:
            return verdict(DigestOutcome.UNSUPPORTED_ALGORITHM)
        if algorithm.upper() not in (a.upper() for a in self.algorithms):
            return verdict(DigestOutcome.UNSUPPORTED_ALGORITHM)
        if realm is not None and cred_realm != realm:
            return verdict(DigestOutcome.WRONG_REALM)
        if request_uri is not None and credentials.uri != request_uri:
            return verdict(DigestOutcome.URI_MISMATCH)
        qop = credentials.qop
        if qop is None:
            if self.require_qop:
                return verdict(DigestOutcome.QOP_REQUIRED)
        elif qop not in self.qop or credentials.nc is None or credentials.cnonce is None:
            return verdict(DigestOutcome.MALFORMED)
        nonce_count = 0
        if qop is not None:
            try:
                nonce_count = int(credentials.nc or "", 16)
            except ValueError:
                return verdict(DigestOutcome.MALFORMED)
            if len(credentials.nc or "") != 8 or nonce_count < 1:
                return verdict(DigestOutcome.MALFORMED)

        issued = self.nonce_issued_at(credentials.nonce, cred_realm)
        if issued is None or issued > now + self.clock_skew:
            return verdict(DigestOutcome.INVALID_NONCE)

        user_ha1: str | None
        if password is not None:
            user_ha1 = compute_ha1(username, cred_realm, password, base)
        elif isinstance(ha1, str):
            user_ha1 = ha1
        elif ha1 is not None:
            user_ha1 = next((v for k, v in ha1.items() if k.upper() == base), None)
        else:
            user_ha1 = None
        if user_ha1 is None:
            return verdict(DigestOutcome.NO_SECRET)

        expected = compute_response(
            ha1=user_ha1.lower(),
            algorithm=algorithm,
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            qop=qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected, credentials.response.lower()):
            return verdict(DigestOutcome.WRONG_RESPONSE)
        # RFC 7616 3.3: stale only when the digest itself is right but the nonce is old.
        if now - issued > self.nonce_lifetime:
            return verdict(DigestOutcome.STALE_NONCE)
        if qop is not None and not self._accept_nonce_count(credentials.nonce, nonce_count):
            return verdict(DigestOutcome.REPLAYED_NONCE_COUNT)
        return verdict(DigestOutcome.OK)

    def _accept_nonce_count(self, nonce: str, nonce_count: int) -> bool:
        """Counts must increase per nonce. Only verified requests reach here, so an attacker
        cannot poison the cache; an evicted nonce simply starts over (bounded memory wins)."""
        last = self._nonce_counts.get(nonce)
        if last is not None and nonce_count <= last:
            return False
        self._nonce_counts[nonce] = nonce_count
        self._nonce_counts.move_to_end(nonce)
        while len(self._nonce_counts) > self._nonce_count_cache_size:
            self._nonce_counts.popitem(last=False)
        return True


# -- client side ------------------------------------------------------------------------------


def choose_challenge(challenges: Iterable[DigestChallenge | str]) -> DigestChallenge:
    """The strongest Digest challenge we support among those of one 401/407 (RFC 8760 2.4:
    the client uses the first one it supports, the server having put its preference first)."""
    parsed: list[DigestChallenge] = []
    for challenge in challenges:
        try:
            candidate = (
                challenge
                if isinstance(challenge, DigestChallenge)
                else DigestChallenge.parse(challenge)
            )
            _base_algorithm(candidate.algorithm)
        except DigestParseError:
            continue
        parsed.append(candidate)
    if not parsed:
        raise DigestParseError("no supported Digest challenge")
    return parsed[0]


def answer_challenge(
    challenge: DigestChallenge | str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    body: bytes = b"",
    cnonce: str | None = None,
    nonce_count: int = 1,
) -> DigestCredentials:
    """Credentials answering one challenge (the Authorization value is ``str(result)``)."""
    if isinstance(challenge, str):
        challenge = DigestChallenge.parse(challenge)
    base, _ = _base_algorithm(challenge.algorithm)
    if ha1 is None:
        if password is None:
            raise ValueError("need a password or an HA1")
        ha1 = compute_ha1(username, challenge.realm, password, base)
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    nc: str | None = None
    if qop is not None:
        nc = f"{nonce_count:08x}"
        cnonce = cnonce or base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
    else:
        cnonce = None
    response = compute_response(
        ha1=ha1,
        algorithm=challenge.algorithm,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    return DigestCredentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc,
    )


class DigestClient:
    """Keeps the nonce-count per nonce so repeated requests on one challenge stay valid."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._nonce_counts: dict[str, int] = {}

    def authorize(
        self,
        challenges: Iterable[DigestChallenge | str],
        *,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> DigestCredentials:
        challenge = choose_challenge(challenges)
        count = self._nonce_counts.get(challenge.nonce, 0) + 1
        # Only the latest nonce matters to a server; forgetting the rest bounds our memory.
        self._nonce_counts = {challenge.nonce: count}
        return answer_challenge(
            challenge,
            method=method,
            uri=uri,
            username=self.username,
            password=self.password,
            body=body,
            nonce_count=count,
        )


def retry_with_credentials(
    request: Request,
    challenge_response: Response,
    client: DigestClient,
) -> Request:
    """The request to send after a 401/407 (RFC 3261 22.2/22.3): a copy of ``request`` with the
    same Call-ID, From, To and body, the CSeq incremented, a fresh Via branch (it is a new
    transaction) and an Authorization (401) or Proxy-Authorization (407) header answering the
    strongest challenge we support. Earlier credentials for the same realm are replaced."""
    if challenge_response.status == 407:
        challenge_header, credentials_header = "Proxy-Authenticate", "Proxy-Authorization"
    elif challenge_response.status == 401:
        challenge_header, credentials_header = "WWW-Authenticate", "Authorization"
    else:
        raise ValueError(f"{challenge_response.status} is not a challenge")
    challenges = [
        value
        for value in challenge_response.headers.get_all(challenge_header)
        if value.lstrip().lower().startswith("digest")
    ]
    retry = Request(request.method, request.uri.copy(), request.headers.copy(), request.body)
    credentials = client.authorize(
        challenges, method=request.method, uri=str(request.uri), body=request.body
    )
    headers = retry.headers
    kept = [
        value
        for value in headers.get_all(credentials_header)
        if _credentials_realm(value) != credentials.realm
    ]
    headers.remove(credentials_header)
    for value in kept:
        headers.add(credentials_header, value)
    headers.add(credentials_header, credentials.to_header_value())
    cseq = request.cseq
    headers.replace("CSeq", f"{cseq.num + 1} {cseq.method}")
    via = request.via
    fresh = Via(via.transport, via.host, via.port, dict(via.params), via.protocol, via.version)
    fresh.params["branch"] = generate_branch()
    headers.set_first("Via", fresh)
    return retry


def _credentials_realm(value: str) -> str | None:
    try:
        return parse_auth_params(value)[1].get("realm")
    except DigestParseError:
        return None
