"""``mirliton calls [--account ID] [--json]``: the call legs the node's calls shards hold.

Asked live over the bus (``channels_req`` on ``callmgr``; every shard answers with its legs).
With ``--json`` the output is one JSON list of objects with ``call_id``, ``direction``
(inbound: the caller's leg, outbound: a leg the platform placed), ``state`` (ringing,
answered), ``caller_id_number``, ``callee_id_number``, ``other_leg_call_id``, ``account_id``,
``created``/``answered`` (Unix seconds), ``shard``, ``node``. Exit 0 with the list (possibly
empty), 2 when no shard answered.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mirliton.config import ConfigError, load_config

__all__ = ["calls"]


@click.command("calls")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MIRLITON_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Node data directory (overrides node.data_dir).")
@click.option("--account", "account_id", default=None, help="Only this account's calls.")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for the shards.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def calls(config_path: str | None, data_dir: str | None, account_id: str | None, timeout: float,
          as_json: bool) -> None:
    """Active calls: one line per leg, with its other leg, state and age."""
    from actors.calls.api import channels_req
    from actors.calls.registry import read_shards
    from bus import BusError, connect

    try:
        cfg = load_config(config_path, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    expected = len(read_shards(cfg.data_dir))
    try:
        bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir, connect_timeout=5.0)
    except BusError as err:
        raise click.ClickException(f"cannot reach the bus: {err}") from None
    try:
        replies = bus.collect(channels_req.build({"Account-ID": account_id} if account_id else {}),
                              timeout=timeout,
                              until=(lambda rs: len(rs) >= expected) if expected else None)
    finally:
        bus.close()
    rows: list[dict[str, Any]] = [
        row for reply in replies for row in reply.get("Channels") or [] if isinstance(row, dict)
    ]
    rows.sort(key=lambda r: (float(r.get("created") or 0), str(r.get("call_id"))))
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
    else:
        if not replies:
            click.echo("no calls shard answered", err=True)
        now = time.time()
        for row in rows:
            age = now - float(row.get("created") or now)
            click.echo(f"{row.get('call_id')!s:<40} {row.get('direction')!s:<8} "
                       f"{row.get('state')!s:<8} {row.get('caller_id_number') or '-'} -> "
                       f"{row.get('callee_id_number') or '-'} {age:6.0f}s "
                       f"other={row.get('other_leg_call_id') or '-'} shard={row.get('shard')}")
    if not replies:
        sys.exit(2)
