"""``mirliton registrations [--realm R] [--json]``: the registrations the node's edges hold.

Asked live over the bus (``registrations_req`` on ``registrar``; every edge answers with its
bindings), so what is listed is what an edge would use to reach a phone right now. With
``--json`` the output is one JSON list of objects with ``aor``, ``contact``,
``original_contact``, ``source_ip``, ``source_port``, ``transport``, ``user_agent``,
``expires`` (seconds left), ``call_id``, ``node``. Exit 0 with the list (possibly empty), 2
when no edge answered.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mirliton.config import ConfigError, load_config

__all__ = ["registrations"]

_FIELDS = (
    ("AOR", "aor"),
    ("Contact", "contact"),
    ("Original-Contact", "original_contact"),
    ("Source-IP", "source_ip"),
    ("Source-Port", "source_port"),
    ("Transport", "transport"),
    ("User-Agent", "user_agent"),
    ("Expires", "expires"),
    ("Call-ID", "call_id"),
    ("Node", "node"),
)


def _row(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: fields.get(wire) for wire, name in _FIELDS}


@click.command("registrations")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MIRLITON_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Node data directory (overrides node.data_dir).")
@click.option("--realm", default=None, help="Only this realm's registrations.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for the edges.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def registrations(
    config_path: str | None, data_dir: str | None, realm: str | None, timeout: float, as_json: bool
) -> None:
    """Registered phones: AOR, contact, source address, user agent, expires."""
    from actors.edge.api import registrations_req
    from bus import BusError, connect

    try:
        cfg = load_config(config_path, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    try:
        bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir, connect_timeout=5.0)
    except BusError as err:
        raise click.ClickException(f"cannot reach the bus: {err}") from None
    try:
        replies = bus.collect(registrations_req.build(realm=realm), timeout=timeout)
    finally:
        bus.close()
    rows = [
        _row(fields)
        for reply in replies
        for fields in reply.get("Registrations") or []
        if isinstance(fields, dict)
    ]
    rows.sort(key=lambda r: (str(r["aor"]), str(r["contact"])))
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
    else:
        if not replies:
            click.echo("no edge answered", err=True)
        for row in rows:
            click.echo(f"{row['aor']:<32} {row['contact']:<40} {row['source_ip']}:{row['source_port']}"
                       f"/{str(row['transport']).lower()} expires={row['expires']}s "
                       f"ua={row['user_agent'] or '-'}")
    if not replies:
        sys.exit(2)
