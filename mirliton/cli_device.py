"""``mirliton device ...``: SIP devices from the command line (kept once the REST API exists).

``mirliton device create --account ID --name N --username U --password P [--json]`` creates a
device with digest credentials in the account's database, then announces it on the bus
(``doc_created``, as crossbar does after its writes) so edges forget a cached "unknown user".
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from mirliton.config import Config, ConfigError, load_config
from store import StoreError, ValidationFailed, open_store

__all__ = ["device"]

log = logging.getLogger("mirliton.cli")


@click.group()
def device() -> None:
    """SIP devices (phones) and their credentials."""


def _announce(cfg: Config, result: dict[str, Any]) -> None:
    # Best effort: the device exists whether or not a node is listening right now.
    try:
        from bus import BusError, connect
        from bus.api.conf import doc_created
        from store.kazoo import encode_db_name

        bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir, connect_timeout=3.0)
    except Exception as error:  # noqa: BLE001 - no bus reachable: nothing to tell
        log.debug("doc_created not published: %s", error)
        return
    try:
        bus.publish(doc_created.build({
            "ID": result["device_id"],
            "Database": encode_db_name(result["account_db"]),
            "Type": "device",
            "Account-ID": result["account_id"],
        }))
    except BusError as error:
        log.debug("doc_created not published: %s", error)
    finally:
        bus.close()


@device.command("create")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MIRLITON_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Node data directory (overrides node.data_dir).")
@click.option("--account", "account_id", required=True, help="Account id the device belongs to.")
@click.option("--name", required=True, help="Device name.")
@click.option("--username", required=True, help="SIP digest username (unique in the account).")
@click.option("--password", required=True, help="SIP digest password.")
@click.option("--disabled", is_flag=True, help="Create the device disabled.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create(
    config_path: str | None,
    data_dir: str | None,
    account_id: str,
    name: str,
    username: str,
    password: str,
    disabled: bool,
    as_json: bool,
) -> None:
    """Create a SIP device with digest credentials."""
    from actors.registrar.devices import create_device

    try:
        cfg = load_config(config_path, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    store = open_store(cfg.store.url, cfg.node.data_dir)
    try:
        result = create_device(store, account_id, name, username, password, enabled=not disabled)
    except ValidationFailed as err:
        _fail(as_json, err.error_id, err.reason, {"errors": err.errors})
    except StoreError as err:
        _fail(as_json, err.error_id, str(err), {})
    finally:
        store.close()
    _announce(cfg, result)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"created device {result['name']} {result['device_id']}")
    click.echo(f"  account:  {result['account_id']}")
    click.echo(f"  username: {result['username']}@{result['realm']}")


def _fail(as_json: bool, error_id: str, message: str, extra: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps({"error": error_id, "message": message, **extra}, sort_keys=True))
    else:
        click.echo(f"error: {message}", err=True)
        for field, rules in extra.get("errors", {}).items():
            for rule, detail in rules.items():
                click.echo(f"  {field}: {rule}: {detail.get('message', '')}", err=True)
    sys.exit(1)
