"""``mirliton prompts install [--json]``: render the system prompts (espeak-ng + sox) into the
store's ``system_media`` database, Kazoo-style (actors/media/prompts.py). Idempotent: prompts
already rendered from the same text are left as they are.

With ``--json`` the output is one JSON object: ``installed``, ``updated``, ``unchanged``
(counts), ``prompts`` (``prompt_id``, ``doc_id``, ``status``, ``seconds``), ``database``.
Exit 1 when espeak-ng or sox is missing or the store is unreachable.
"""

from __future__ import annotations

import json
from collections import Counter

import click

from mirliton.config import ConfigError, load_config

__all__ = ["prompts"]


@click.group()
def prompts() -> None:
    """System prompts (voicemail, menus, conference, numbers)."""


@prompts.command("install")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MIRLITON_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Node data directory (overrides node.data_dir).")
@click.option("--language", default="en-us", show_default=True, help="Prompt language.")
@click.option("--only", "only", default="", help="Comma-separated prompt ids (default: all).")
@click.option("--force", is_flag=True, help="Render again even when unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def install(config_path: str | None, data_dir: str | None, language: str, only: str,
            force: bool, as_json: bool) -> None:
    """Render the system prompts and store them in system_media."""
    from actors.media.prompts import (
        SYSTEM_MEDIA_DB,
        InstallResult,
        PromptToolsMissing,
        install_prompts,
    )
    from store import StoreError, open_store

    try:
        cfg = load_config(config_path, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    wanted = [p.strip() for p in only.split(",") if p.strip()] or None

    def show(result: InstallResult) -> None:
        if not as_json:
            click.echo(f"{result.status:9} {result.prompt_id} ({result.seconds:.1f} s)")

    store = open_store(cfg.store.url, cfg.node.data_dir)
    try:
        results = install_prompts(store, wanted, language=language, force=force, progress=show)
    except PromptToolsMissing as err:
        raise click.ClickException(str(err)) from None
    except KeyError as err:
        raise click.ClickException(str(err.args[0])) from None
    except StoreError as err:
        raise click.ClickException(f"store: {err}") from None
    finally:
        store.close()
    counts = Counter(r.status for r in results)
    if as_json:
        click.echo(json.dumps({
            "database": SYSTEM_MEDIA_DB,
            "installed": counts["installed"],
            "updated": counts["updated"],
            "unchanged": counts["unchanged"],
            "prompts": [{"prompt_id": r.prompt_id, "doc_id": r.doc_id, "status": r.status,
                         "seconds": round(r.seconds, 3)} for r in results],
        }, sort_keys=True))
    else:
        click.echo(f"{len(results)} prompts in {SYSTEM_MEDIA_DB}: {counts['installed']} installed, "
                   f"{counts['updated']} updated, {counts['unchanged']} unchanged")
