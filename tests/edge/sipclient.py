"""A small blocking SIP UDP client for the edge tests: raw datagrams to a real edge, replies
parsed with the project's SIP parser, digest answered with its DigestClient. It stands for
the probes an operator or an attacker would send (scanners, floods, torture messages), not
for phones: phones in these tests are pjsua2 and baresip."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from protocols.sip import (
    DigestClient,
    Request,
    Response,
    SipParseError,
    generate_branch,
    generate_call_id,
    generate_tag,
    parse_message,
)
from protocols.sip.digest import retry_with_credentials

__all__ = ["SipProbe", "raw_call_id"]


_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def raw_call_id(data: bytes) -> str | None:
    """The Call-ID of a message read straight from its bytes (works on broken messages)."""
    match = _CALL_ID.search(data)
    return match.group(1).decode("latin-1") if match else None


def _status_only(data: bytes) -> Response | None:
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", [])


@dataclass
class SipProbe:
    edge: tuple[str, int]
    bind_host: str = "127.0.0.1"
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.bind_host, 0))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_uri: str,
        to_uri: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        contact: str | None = None,
        expires: int | None = None,
        user_agent: str | None = "mirliton-test-probe",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        host, port = self.address
        headers = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={generate_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{from_uri}>;tag={generate_tag()}"),
            ("To", f"<{to_uri or from_uri}>"),
            ("Call-ID", call_id or generate_call_id(host)),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact is not None:
            headers.append(("Contact", contact))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if user_agent is not None:
            headers.append(("User-Agent", user_agent))
        headers.extend(extra)
        return Request(method, uri, headers)

    def register(
        self, user: str, realm: str, *, expires: int | None = 600, contact: str | None = None,
        user_agent: str | None = "mirliton-test-probe", call_id: str | None = None, cseq: int = 1,
    ) -> Request:
        host, port = self.address
        return self.request(
            "REGISTER", f"sip:{realm}", from_uri=f"sip:{user}@{realm}",
            contact=contact if contact is not None else f"<sip:{user}@{host}:{port}>",
            expires=expires, user_agent=user_agent, call_id=call_id, cseq=cseq,
        )

    # -- exchanging --------------------------------------------------------------------------

    def send(self, message: Request | bytes) -> None:
        self.sock.sendto(bytes(message), self.edge)

    def receive(
        self, timeout: float = 2.0, call_id: str | Collection[str] | None = None
    ) -> Response | None:
        """The next final response (of that Call-ID if given), or None when none arrived
        within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            try:
                message = parse_message(data)
            except SipParseError:
                # An answer to a broken request may echo the broken header: keep its status.
                message = _status_only(data)
                if message is None:
                    continue
            if not isinstance(message, Response) or message.status < 200:
                continue
            wanted = {call_id} if isinstance(call_id, str) else call_id
            if wanted is not None and raw_call_id(data) not in wanted:
                continue  # a late retransmission of an answer to an earlier request
            return message

    def exchange(self, message: Request | bytes, timeout: float = 2.0) -> Response | None:
        self.send(message)
        return self.receive(timeout)

    def drain(self, quiet: float = 0.3) -> int:
        """Read and discard whatever arrives until ``quiet`` seconds pass without anything."""
        count = 0
        while self.receive(quiet) is not None:
            count += 1
        return count

    def register_with_password(
        self, user: str, realm: str, password: str, **kwargs: object
    ) -> tuple[Response | None, Response | None]:
        """REGISTER, then again answering the challenge: (first answer, second answer)."""
        request = self.register(user, realm, **kwargs)  # type: ignore[arg-type]
        first = self.exchange(request)
        if first is None or first.status not in (401, 407):
            return first, None
        retry = retry_with_credentials(request, first, DigestClient(user, password))
        return first, self.exchange(retry)
