"""``mirliton account ...``: account administration from the command line.

``mirliton account create --name N --realm R --username U --password P [--json]`` creates an
account and its first admin user in the store the node configuration names (``store.url``,
``node.data_dir``); the first account created is the system (super-admin) account.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mirliton.config import ConfigError, load_config
from store import StoreError, ValidationFailed, open_store
from store.accounts import create_account

__all__ = ["account"]


@click.group()
def account() -> None:
    """Accounts (tenants) and their users."""


@account.command("create")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MIRLITON_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Node data directory (overrides node.data_dir).")
@click.option("--name", required=True, help="Account name.")
@click.option("--realm", required=True, help="SIP realm (domain), unique across accounts.")
@click.option("--username", required=True, help="Login of the first admin user.")
@click.option("--password", required=True, help="Password of the first admin user.")
@click.option("--first-name", default="Account", show_default=True, help="Admin user's first name.")
@click.option("--last-name", default="Admin", show_default=True, help="Admin user's last name.")
@click.option("--email", default=None, help="Admin user's email.")
@click.option("--parent-id", default=None, help="Parent account id (reseller hierarchy).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create(
    config_path: str | None,
    data_dir: str | None,
    name: str,
    realm: str,
    username: str,
    password: str,
    first_name: str,
    last_name: str,
    email: str | None,
    parent_id: str | None,
    as_json: bool,
) -> None:
    """Create an account and its first admin user."""
    try:
        cfg = load_config(config_path, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    store = open_store(cfg.store.url, cfg.node.data_dir)
    try:
        result = create_account(
            store,
            name,
            realm,
            username,
            password,
            parent_id=parent_id,
            first_name=first_name,
            last_name=last_name,
            email=email,
        )
    except ValidationFailed as err:
        _fail(as_json, err.error_id, err.reason, {"errors": err.errors})
    except StoreError as err:
        _fail(as_json, err.error_id, str(err), {})
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    role = " (system account)" if result["superduper_admin"] else ""
    click.echo(f"created account {result['name']} {result['account_id']}{role}")
    click.echo(f"  realm:    {result['realm']}")
    click.echo(f"  database: {result['account_db']}")
    click.echo(f"  admin:    {result['username']} ({result['user_id']})")


def _fail(as_json: bool, error_id: str, message: str, extra: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps({"error": error_id, "message": message, **extra}, sort_keys=True))
    else:
        click.echo(f"error: {message}", err=True)
        for field, rules in extra.get("errors", {}).items():
            for rule, detail in rules.items():
                click.echo(f"  {field}: {rule}: {detail.get('message', '')}", err=True)
    sys.exit(1)
