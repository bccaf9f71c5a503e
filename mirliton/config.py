"""Node configuration: a TOML file overridden by ``MIRLITON_<SECTION>__<KEY>`` variables,
validated, with errors that name the key (INTERFACES.md, "Configuration")."""

from __future__ import annotations

import json
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Config", "ConfigError", "load_config", "parse_hostport"]

ENV_PREFIX = "MIRLITON_"


class ConfigError(ValueError):
    """Invalid configuration; the message names the key (``section.key``)."""


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSection(_Section):
    name: str = Field(default_factory=socket.gethostname)
    # Empty means every built-in role; entries are role names or "module:Class" plug-ins.
    roles: list[str] = Field(default_factory=list)
    data_dir: Path = Path("./var")
    zone: str = "local"


class BusSection(_Section):
    url: str = "local"
    # Seconds between this node's advertises on the nodes exchange (Kazoo's kz_nodes).
    heartbeat_interval: float = Field(default=5.0, gt=0)


class StoreSection(_Section):
    url: str = "embedded"


class SipSection(_Section):
    listen: list[str] = Field(default_factory=lambda: ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"])


class EdgeSection(_Section):
    """The SBC guards (Kazoo's Kamailio defaults; ../shared/reference/sip-testing.md section 1)."""

    # Sources that skip every guard and authentication (Kazoo's trusted address table).
    trusted_cidrs: list[str] = Field(default_factory=list)
    # Anti-flood (pike): initial requests per source IP per window, then silent drop until
    # the rate falls under the limit again and stays there for flood_release seconds.
    flood_requests: int = Field(default=50, ge=1)
    flood_window: float = Field(default=2.0, gt=0)
    flood_release: float = Field(default=4.0, ge=0)
    # Failed-auth lockout per user + source: this many failures within the window gives
    # 403 with Retry-After until the window passes or an authentication succeeds.
    auth_failures: int = Field(default=4, ge=1)
    auth_failure_window: float = Field(default=300.0, gt=0)
    lockout_retry_after: int = Field(default=3600, ge=0)
    # Substrings of User-Agent values dropped silently (case-insensitive).
    scanner_user_agents: list[str] = Field(default_factory=lambda: [
        "friendly-scanner", "sipcli", "sundayddr", "pplsip", "niceguy", "portsip", "qnq",
        "sipvicious", "sip-scan", "iwar"])
    # Max-Forwards put on requests that carry none (Kamailio's mf_process_maxfwd_header).
    max_forwards: int = Field(default=10, ge=1)
    # authn_req answered within this time, else the REGISTER is dropped (Kazoo: 2500 ms).
    authn_timeout: float = Field(default=2.5, gt=0)
    # Credentials cached (Kazoo's auth_cache); a cached "unknown user" expires sooner.
    credentials_ttl: float = Field(default=7200.0, ge=0)
    negative_credentials_ttl: float = Field(default=60.0, ge=0)
    # Shared with the other edges of a cluster so a nonce issued by one verifies on another;
    # empty: derived from the node's data dir (fine for one node).
    nonce_secret: str = ""
    nonce_lifetime: float = Field(default=300.0, gt=0)
    # Challenges offered, strongest first; MD5 alone by default as Kazoo's Kamailio (many
    # phones pick the first challenge whatever its algorithm).
    digest_algorithms: list[str] = Field(default_factory=lambda: ["MD5"])
    # Answer insane requests 400 (RFC 4475) or drop them silently (Kazoo's
    # SANITY_DROPS_REQUEST).
    sanity_drops: bool = False
    # Receive buffer of the UDP listeners (bytes; the kernel caps it at net.core.rmem_max).
    udp_receive_buffer: int = Field(default=4 * 1024 * 1024, ge=0)


class RegistrarSection(_Section):
    # Kazoo's registrar: min/default/max expiry in seconds.
    min_expires: int = Field(default=300, ge=1)
    default_expires: int = Field(default=600, ge=1)
    max_expires: int = Field(default=3600, ge=1)
    # Contacts kept per AOR; the oldest binding goes when a new one exceeds it.
    max_contacts: int = Field(default=10, ge=1)


class CallsSection(_Section):
    """Call control (actors/calls) and the apps that drive calls (callflow, cdr)."""

    # Shard processes holding call legs; the edge hashes new calls on Call-ID over them.
    shards: int = Field(default=2, ge=1, le=64)
    # Each shard's internal SIP listener (the edge talks to it; never public).
    listen_host: str = "127.0.0.1"
    # 0: ephemeral ports; else shard N listens on base_port + N.
    base_port: int = Field(default=0, ge=0, le=65535)
    # route_req: seconds to wait for a route_resp (then 604); Kazoo's ~3 s fetch budget.
    route_timeout: float = Field(default=3.0, gt=0)
    # callflow: seconds to wait for route_win after answering park (Kazoo: 3 s).
    route_win_timeout: float = Field(default=3.0, gt=0)
    # A routed call that gets no command this many seconds after route_win, or that sits
    # answered with nothing running or queued (outside a bridge or a conference) this long,
    # is hung up (FreeSWITCH's park_timeout, cause RECOVERY_ON_TIMER_EXPIRE): its app is gone.
    park_timeout: float = Field(default=30.0, gt=0)
    # Bridge: default ring time per endpoint when a bridge names none (Kazoo: 20 s).
    bridge_timeout: float = Field(default=20.0, gt=0)
    # reg_query: seconds to wait for the edges to say where a device is registered.
    reg_query_timeout: float = Field(default=2.0, gt=0)


class MediaSection(_Section):
    """The media engine of the calls shards (actors/media): RTP ports and addresses."""

    # Where RTP sockets bind, and the address put in SDP (empty: bind_address, or 127.0.0.1
    # when binding to every interface).
    bind_address: str = "127.0.0.1"
    advertise_address: str = ""
    # Even ports of this range carry RTP (the odd one above each is left for RTCP); shared by
    # the shards of a node, each takes whichever free port it binds first.
    rtp_port_min: int = Field(default=16384, ge=1024, le=65535)
    rtp_port_max: int = Field(default=32767, ge=1024, le=65535)


class HttpSection(_Section):
    listen: str = "127.0.0.1:8000"

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        parse_hostport(v)
        return v


class OpsSection(HttpSection):
    listen: str = "127.0.0.1:9494"


class LogSection(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SupervisionSection(_Section):
    # Restart intensity of the node's root supervisor of role processes.
    intensity: int = Field(default=10, ge=0)
    period: float = Field(default=10.0, gt=0)


class Config(_Section):
    node: NodeSection = Field(default_factory=NodeSection)
    bus: BusSection = Field(default_factory=BusSection)
    store: StoreSection = Field(default_factory=StoreSection)
    sip: SipSection = Field(default_factory=SipSection)
    edge: EdgeSection = Field(default_factory=EdgeSection)
    registrar: RegistrarSection = Field(default_factory=RegistrarSection)
    calls: CallsSection = Field(default_factory=CallsSection)
    media: MediaSection = Field(default_factory=MediaSection)
    http: HttpSection = Field(default_factory=HttpSection)
    ops: OpsSection = Field(default_factory=OpsSection)
    log: LogSection = Field(default_factory=LogSection)
    supervision: SupervisionSection = Field(default_factory=SupervisionSection)

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def run_dir(self) -> Path:
        return self.node.data_dir / "run"


def _env_value(raw: str) -> Any:
    # Lists and numbers come as JSON (MIRLITON_NODE__ROLES='["edge","calls"]'); else a string.
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        if section.startswith("TEST_"):
            continue  # MIRLITON_TEST_* belong to the test suite
        data.setdefault(section.lower(), {})[key.lower()] = _env_value(raw)


def load_config(
    path: Path | str | None = None,
    data_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file (if any), apply the environment, then ``data_dir`` (the CLI flag)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path}: {err}") from None
    _apply_env(data, os.environ if env is None else env)
    if data_dir is not None:
        data.setdefault("node", {})["data_dir"] = str(data_dir)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            problems.append(f"{key}: {e['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    cfg.node.data_dir = cfg.node.data_dir.resolve()
    return cfg
