"""The ``mirliton`` command (INTERFACES.md, "CLI"). Every subcommand takes ``--json``."""

from gevent import monkey

# Before anything else imports socket, ssl, threading or time: every process of a node
# (forked from this one) runs gevent, so sockets, timers, pika, HTTP and Thespian's loop
# cooperate without threads.
monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from mirliton.config import Config, ConfigError, load_config  # noqa: E402

__all__ = ["main"]


def _load(config: str | None, data_dir: str | None) -> Config:
    try:
        return load_config(config, data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             envvar="MIRLITON_CONFIG", help="TOML configuration file.")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="Node data directory (overrides node.data_dir).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
@click.version_option(package_name="mirliton")
def main() -> None:
    """mirliton: a hosted PBX built the way Kazoo is, with OTP-style supervision."""


@main.command()
@config_option
@data_dir_option
@click.option("--detach", is_flag=True, help="Run in the background; return once ready.")
def start(config_path: str | None, data_dir: str | None, detach: bool) -> None:
    """Start a node (foreground until Ctrl-C / SIGTERM)."""
    cfg = _load(config_path, data_dir)
    if detach:
        _start_detached(cfg, config_path)
        return
    prepare_environment(cfg)
    from mirliton.node import NodeAlreadyRunning, run_node

    try:
        code = run_node(cfg)
    except NodeAlreadyRunning as err:
        raise click.ClickException(str(err)) from None
    sys.exit(code)


def prepare_environment(cfg: Config) -> Path:
    """Before anything imports prometheus_client: the node's multiprocess metrics directory."""
    metrics_dir = cfg.run_dir / "metrics"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # Thespian's actor sockets on loopback only.
    os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")
    return metrics_dir


def _start_detached(cfg: Config, config_path: str | None) -> None:
    from mirliton.status import pid_alive, read_node_file

    run_dir = cfg.run_dir
    existing = read_node_file(run_dir)
    if existing and pid_alive(existing.get("pid")):
        raise click.ClickException(
            f"a node is already running from {cfg.data_dir} (pid {existing['pid']})")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "mirliton", "start", "--data-dir", str(cfg.data_dir)]
    if config_path:
        args += ["--config", config_path]
    out = open(cfg.data_dir / "node.out", "ab")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = read_node_file(run_dir)
        if info and info.get("pid") == proc.pid and info.get("ready"):
            click.echo(f"node {info['node']} started (pid {proc.pid})")
            return
        if proc.poll() is not None:
            raise click.ClickException(
                f"the node exited with code {proc.returncode}; see {cfg.data_dir}/node.out")
        time.sleep(0.1)
    proc.terminate()
    raise click.ClickException("the node did not become ready in 120 s")


@main.command()
@config_option
@data_dir_option
def stop(config_path: str | None, data_dir: str | None) -> None:
    """Stop the node started from the data directory, gracefully."""
    cfg = _load(config_path, data_dir)
    prepare_environment(cfg)
    from mirliton.node import stop_node

    if not stop_node(cfg.run_dir, cfg.data_dir):
        raise click.ClickException(f"no node is running from {cfg.data_dir}")
    click.echo("node stopped")


def _print_tree(node: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    pid = f" pid={node['pid']}" if node.get("pid") else ""
    extra = f" {node['strategy']}" if node.get("strategy") else ""
    restarts = f" restarts={node['restarts']}" if "restarts" in node else ""
    count = f" children={node['children_count']}" if "children_count" in node else ""
    click.echo(f"{pad}{node.get('id', '?')} [{node.get('kind', '?')}{extra}] "
               f"{node.get('state', '?')}{pid}{restarts}{count}")
    for child in node.get("children", []) or []:
        _print_tree(child, indent + 1)
    actors = node.get("actors")
    if actors:
        for child in actors.get("children", []):
            _print_tree(child, indent + 1)


@main.command()
@config_option
@data_dir_option
@json_option
def status(config_path: str | None, data_dir: str | None, as_json: bool) -> None:
    """Node, roles and the supervision tree. Exit 0 running, 1 degraded, 2 not running."""
    cfg = _load(config_path, data_dir)
    from mirliton.status import node_status

    code, st = node_status(cfg.run_dir)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
    elif code == 2:
        click.echo(f"not running ({cfg.data_dir})")
    else:
        click.echo(f"node {st['node']} {st['state']} pid={st['pid']} roles={','.join(st['roles'])}")
        if st.get("tree"):
            _print_tree(st["tree"])
        for peer in st.get("nodes", []):
            me = " (this node)" if peer.get("self") else ""
            click.echo(f"node {peer.get('name')}{me} zone={peer.get('zone')} "
                       f"roles={','.join(peer.get('roles', []))} "
                       f"processes={peer.get('processes')} version={peer.get('version')}")
    sys.exit(code)


def _register_subcommands() -> None:
    # Subcommand groups that other packages provide (accounts, devices, registrations...).
    import importlib

    for module, attr in (("mirliton.cli_account", "account"), ("mirliton.cli_device", "device"),
                         ("mirliton.cli_registrations", "registrations"),
                         ("mirliton.cli_calls", "calls"), ("mirliton.cli_prompts", "prompts")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        main.add_command(getattr(mod, attr))


_register_subcommands()
