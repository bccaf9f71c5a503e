from __future__ import annotations

import json
import logging
from pathlib import Path

import gevent
import pytest

from actors.kernel import Actor, current_call_id, spawn
from mirliton.config import ConfigError, load_config
from mirliton.logs import configure_logging, set_process_context


def test_defaults_match_interfaces() -> None:
    cfg = load_config(env={})
    assert cfg.bus.url == "local"
    assert cfg.store.url == "embedded"
    assert cfg.sip.listen == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert cfg.http.listen == "127.0.0.1:8000"
    assert cfg.ops.listen == "127.0.0.1:9494"
    assert cfg.node.data_dir == Path("./var").resolve()


def test_toml_then_env_then_flag(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('[node]\nname = "n1"\nroles = ["ops"]\n[bus]\nurl = "amqp://g:g@h:5672/"\n')
    cfg = load_config(f, env={"MIRLITON_BUS__URL": "local", "MIRLITON_NODE__ROLES": '["a","b"]'})
    assert cfg.node.name == "n1" and cfg.bus.url == "local" and cfg.node.roles == ["a", "b"]
    cfg = load_config(f, data_dir=tmp_path / "d", env={})
    assert cfg.node.data_dir == tmp_path / "d"


@pytest.mark.parametrize(("env", "key"), [
    ({"MIRLITON_OPS__LISTEN": "nowhere"}, "ops.listen"),
    ({"MIRLITON_NODE__BOGUS": "1"}, "node.bogus"),
    ({"MIRLITON_LOG__LEVEL": "LOUD"}, "log.level"),
    ({"MIRLITON_SUPERVISION__INTENSITY": "-1"}, "supervision.intensity"),
])
def test_errors_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(env=env)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[node\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(f, env={})


def test_json_log_lines_carry_node_role_actor_and_call_id(tmp_path: Path) -> None:
    log_file = tmp_path / "log.jsonl"
    configure_logging("json", "INFO", log_file, stderr=False)
    set_process_context(node="n7", role="root.calls")

    class Leg(Actor):
        def init(self) -> None:
            current_call_id.set("abc@host")
            logging.getLogger("mirliton.calls").info("leg up")

    try:
        spawn(Leg())
        gevent.sleep(0)
        logging.getLogger("mirliton.node").warning("outside any actor")
    finally:
        configure_logging("text", "INFO", None, stderr=False)
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    leg = next(x for x in lines if x["event"] == "leg up")
    assert leg["node"] == "n7" and leg["role"] == "root.calls" and leg["call_id"] == "abc@host"
    assert leg["actor"].startswith("<Leg #") and leg["level"] == "info" and "timestamp" in leg
    outside = next(x for x in lines if x["event"] == "outside any actor")
    assert "call_id" not in outside and "actor" not in outside
