"""The edge's guards, sans-I/O: every decision takes the current time as an argument.

They mirror Kazoo's Kamailio defaults (../shared/reference/sip-testing.md sections 1 and 5):

- :class:`TrustedSources` - CIDRs whose requests skip every guard and authentication
  (Kamailio's ``address`` table, ``FLAG_TRUSTED_SOURCE``).
- :func:`is_scanner` - User-Agents of SIP scanners, dropped silently so a scanner learns
  nothing (``friendly-scanner``, ``sipcli``, ``sundayddr``, ``pplsip``, ...).
- :func:`has_ip_literal_domain` - an untrusted REGISTER/SUBSCRIBE whose To or From domain is an
  IP address is a scanner (traffic-filter role): dropped.
- :class:`FloodGuard` - Kamailio's ``pike``: more than ``limit`` initial requests from one IP
  within ``window`` seconds and the source is blocked (silent drop) until its rate falls under
  the limit and ``release`` seconds pass without it going over again.
- :class:`AuthLockout` - failed digest attempts counted per (user, IP, port); ``threshold``
  failures within ``window`` seconds lock that key out (403 + Retry-After) until the window
  slides past them or an authentication succeeds (or a registration flush clears it).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AuthLockout",
    "FloodGuard",
    "TrustedSources",
    "has_ip_literal_domain",
    "is_ip_literal",
    "is_scanner",
]


class TrustedSources:
    """A set of CIDRs; ``contains(ip)`` is true for addresses inside any of them."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)
        # Sources seen on the hot path: one dict lookup instead of a walk over the networks.
        self._seen: dict[str, bool] = {}

    def contains(self, ip: str) -> bool:
        known = self._seen.get(ip)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        trusted = any(address in network for network in self.networks)
        if len(self._seen) > 65536:
            self._seen.clear()
        self._seen[ip] = trusted
        return trusted


def is_scanner(user_agent: str | None, patterns: Sequence[str]) -> bool:
    """Whether the User-Agent contains one of ``patterns`` (case-insensitive)."""
    if not user_agent:
        return False
    lowered = user_agent.lower()
    return any(pattern.lower() in lowered for pattern in patterns)


_IPV4_CHARS = frozenset("0123456789.")


def is_ip_literal(host: str) -> bool:
    # Most hosts are domain names: decide those without raising (exceptions are slow).
    if not host or (":" not in host and not _IPV4_CHARS.issuperset(host)):
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def has_ip_literal_domain(*hosts: str | None) -> bool:
    """Whether any of the given URI hosts (To, From domains) is an IP address."""
    return any(host is not None and is_ip_literal(host) for host in hosts)


@dataclass(slots=True)
class _SourceRate:
    window_start: float
    count: int
    blocked_until: float


class FloodGuard:
    """Per-source rate limit of initial requests, as Kamailio's pike module.

    ``allow(ip, now)`` counts a request and says whether it may pass. Counting happens in
    fixed windows of ``window`` seconds; a request that takes its window's count over
    ``limit`` (re)arms the block for ``release`` seconds, so while a flood goes on every
    window goes over again and the block never lapses; once the rate falls, it does.
    """

    def __init__(self, limit: int = 50, window: float = 2.0, release: float = 4.0) -> None:
        self.limit = limit
        self.window = window
        self.release = release
        self._sources: dict[str, _SourceRate] = {}
        self._next_prune = 0.0

    def allow(self, ip: str, now: float) -> bool:
        rate = self._sources.get(ip)
        if rate is None:
            rate = self._sources[ip] = _SourceRate(now, 0, 0.0)
        elif now - rate.window_start >= self.window:
            rate.window_start = now
            rate.count = 0
        rate.count += 1
        if rate.count > self.limit:
            rate.blocked_until = now + self.release
        if now >= self._next_prune:
            self._prune(now)
        return now >= rate.blocked_until

    def blocked(self, ip: str, now: float) -> bool:
        rate = self._sources.get(ip)
        return rate is not None and now < rate.blocked_until

    def _prune(self, now: float) -> None:
        # Forget sources whose window and block are both over: memory stays bounded by the
        # sources seen in the last few seconds, whatever a scanner sweep throws at us.
        horizon = self.window + self.release
        stale = [
            ip
            for ip, rate in self._sources.items()
            if now - rate.window_start >= horizon and now >= rate.blocked_until
        ]
        for ip in stale:
            del self._sources[ip]
        self._next_prune = now + horizon

    def __len__(self) -> int:
        return len(self._sources)


AuthKey = tuple[str, str, int]  # (auth user, source IP, source port), Kazoo's antiflood key


class AuthLockout:
    """Failed-authentication counter per (user, IP, port) with a sliding window."""

    def __init__(self, threshold: int = 4, window: float = 300.0) -> None:
        self.threshold = threshold
        self.window = window
        self._failures: dict[AuthKey, deque[float]] = {}
        self._next_prune = 0.0

    def _recent(self, key: AuthKey, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def locked(self, key: AuthKey, now: float) -> bool:
        """Whether ``key`` has reached the threshold within the window."""
        times = self._recent(key, now)
        return times is not None and len(times) >= self.threshold

    def record_failure(self, key: AuthKey, now: float) -> bool:
        """Count a failure; True when this one reaches the threshold (lock out now)."""
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque()
        times.append(now)
        if now >= self._next_prune:
            self._prune(now)
        return len(times) >= self.threshold

    def failures(self, key: AuthKey, now: float) -> int:
        times = self._recent(key, now)
        return 0 if times is None else len(times)

    def clear(self, key: AuthKey) -> None:
        """A successful authentication clears the counter (Kazoo: antiflood entry removed)."""
        self._failures.pop(key, None)

    def clear_user(self, user: str) -> None:
        """A registration flush clears every counter of that user, whatever the source."""
        for key in [key for key in self._failures if key[0] == user]:
            del self._failures[key]

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        self._next_prune = now + self.window

    def __len__(self) -> int:
        return len(self._failures)
