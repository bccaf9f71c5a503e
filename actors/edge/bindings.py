"""Registration bindings of one address of record, sans-I/O (RFC 3261 section 10.3).

:func:`apply_register` takes the bindings an AOR has, what a REGISTER asks for and the time,
and returns the outcome: the status to answer and the bindings after the request. The
registration actor owns the result; nothing here touches the network, the store or a clock.

Times are wall-clock seconds (``time.time()``): bindings are written to the store and must
keep their meaning in a restarted process and on another node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocols.sip import URI, NameAddr, StarContact

__all__ = [
    "Binding",
    "ExpiryLimits",
    "RegisterOutcome",
    "aor_key",
    "apply_register",
    "binding_doc_id",
    "nat_target",
]


def aor_key(user: str | None, host: str) -> str:
    """The AOR a registration is kept under: ``user@realm``, both lower-cased as Kazoo does."""
    return f"{(user or '').lower()}@{host.lower()}"


def binding_doc_id(node: str, aor: str) -> str:
    """One store document per (node, AOR): each edge node persists the bindings it holds."""
    return f"{node}:{aor}"


@dataclass(frozen=True, slots=True)
class ExpiryLimits:
    minimum: int = 300
    default: int = 600
    maximum: int = 3600
    max_contacts: int = 10


@dataclass(slots=True)
class Binding:
    """One contact of an AOR and where it was registered from."""

    uri: str  # the contact URI, the binding's identity within its AOR
    contact: str  # the Contact header value as the phone sent it (name-addr form)
    expires_at: float
    call_id: str
    cseq: int
    source_ip: str
    source_port: int
    transport: str  # Via transport token of the listener it came in on ("UDP", "TCP")
    user_agent: str = ""
    registered_at: float = 0.0
    q: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def remaining(self, now: float) -> int:
        return max(0, int(round(self.expires_at - now)))

    def to_doc(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies recursively and shows in profiles.
        return {
            "uri": self.uri,
            "contact": self.contact,
            "expires_at": self.expires_at,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "source_ip": self.source_ip,
            "source_port": self.source_port,
            "transport": self.transport,
            "user_agent": self.user_agent,
            "registered_at": self.registered_at,
            "q": self.q,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Binding:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    status: int  # 200, or 423 (too brief), 400 (bad contact), 500 (out of order)
    reason: str = ""
    bindings: tuple[Binding, ...] = ()
    changed: bool = False  # bindings added, removed, or their contact/source changed
    first_registration: bool = False
    added: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()


def _requested_expires(
    contact: NameAddr, header_expires: int | None, limits: ExpiryLimits
) -> int:
    value = contact.expires
    if value is None:
        value = header_expires
    if value is None:
        value = limits.default
    return value


def apply_register(
    current: Mapping[str, Binding],
    contacts: Sequence[NameAddr | StarContact],
    header_expires: int | None,
    *,
    call_id: str,
    cseq: int,
    source: tuple[str, int],
    transport: str,
    user_agent: str,
    now: float,
    limits: ExpiryLimits,
) -> RegisterOutcome:
    """RFC 3261 10.3 steps 6-8 for one REGISTER; ``current`` is not modified."""
    live = {uri: b for uri, b in current.items() if b.expires_at > now}
    was_empty = not live
    if not contacts:
        # A query: the current bindings, nothing changes.
        return RegisterOutcome(200, "OK", tuple(live.values()))
    if any(isinstance(c, StarContact) or c.is_star for c in contacts):
        # Contact: * with Expires: 0 (the message layer checks that it is alone and has
        # Expires 0): remove every binding, unless this is an old request replayed late.
        for binding in live.values():
            if binding.call_id == call_id and cseq <= binding.cseq:
                return RegisterOutcome(500, "Server Internal Error - Out of Order", tuple(live.values()))
        return RegisterOutcome(
            200, "OK", (), changed=bool(live), removed=tuple(live.values())
        )
    wanted: list[tuple[NameAddr, str, int]] = []
    for contact in contacts:
        assert isinstance(contact, NameAddr)
        if contact.uri.scheme not in ("sip", "sips"):
            return RegisterOutcome(400, "Bad Request - Contact is not a SIP URI", tuple(live.values()))
        expires = _requested_expires(contact, header_expires, limits)
        if 0 < expires < limits.minimum:
            return RegisterOutcome(423, "Interval Too Brief", tuple(live.values()))
        wanted.append((contact, str(contact.uri), min(expires, limits.maximum)))
    updated = dict(live)
    added: list[Binding] = []
    removed: list[Binding] = []
    changed = False
    for contact, uri, expires in wanted:
        existing = updated.get(uri)
        if existing is not None and existing.call_id == call_id:
            if cseq < existing.cseq:
                return RegisterOutcome(500, "Server Internal Error - Out of Order", tuple(live.values()))
            if cseq == existing.cseq:
                # The same request again (a retransmission that found no transaction, as the
                # edge keeps none once a REGISTER is answered): the same answer, no change.
                continue
        if expires == 0:
            if existing is not None:
                removed.append(updated.pop(uri))
                changed = True
            continue
        binding = Binding(
            uri=uri,
            contact=str(contact),
            expires_at=now + expires,
            call_id=call_id,
            cseq=cseq,
            source_ip=source[0],
            source_port=source[1],
            transport=transport,
            user_agent=user_agent,
            registered_at=existing.registered_at if existing is not None else now,
            q=contact.q,
        )
        if existing is None:
            added.append(binding)
            changed = True
        elif (existing.source_ip, existing.source_port, existing.transport, existing.contact) != (
            binding.source_ip,
            binding.source_port,
            binding.transport,
            binding.contact,
        ):
            changed = True
        updated[uri] = binding
    if len(updated) > limits.max_contacts:
        # The oldest registrations make room (Kamailio's max_contacts with "overwrite oldest").
        ordered = sorted(updated.values(), key=lambda b: b.registered_at)
        for binding in ordered[: len(updated) - limits.max_contacts]:
            removed.append(updated.pop(binding.uri))
            changed = True
    return RegisterOutcome(
        200,
        "OK",
        tuple(updated.values()),
        changed=changed,
        first_registration=was_empty and bool(updated),
        added=tuple(added),
        removed=tuple(removed),
    )


def nat_target(binding: Binding) -> str:
    """The URI that reaches the phone: its contact, with host and port replaced by the address
    the REGISTER really came from when they differ (the phone is behind NAT; Kamailio's
    fix_nated_register / set_contact_alias do the same job)."""
    try:
        uri = URI.parse(binding.uri)
    except ValueError:
        return binding.uri
    host = uri.host.strip("[]") if uri.host else ""
    if host == binding.source_ip and (uri.port or 5060) == binding.source_port:
        return binding.uri
    reached = uri.copy()
    reached.host = binding.source_ip
    reached.port = binding.source_port
    if binding.transport != "UDP":
        reached.params = {**reached.params, "transport": binding.transport.lower()}
    return str(reached)
