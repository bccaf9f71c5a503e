"""The suite's RabbitMQ: ``MIRLITON_TEST_AMQP_URL`` (the test command starts one,
tests/services/setup.sh), and a vhost of its own for a group of tests (created with rabbitmqctl
when it is available, deleted afterwards) so that they never see other tests' messages; without
rabbitmqctl they use the URL's vhost (and unique names)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = ["AMQP_URL", "amqp_vhost", "broker_reachable", "rabbitmqctl"]

AMQP_URL = os.environ.get("MIRLITON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str) -> bool:
    """``rabbitmqctl ARGS`` succeeded (False without rabbitmqctl)."""
    if shutil.which("rabbitmqctl") is None:
        return False
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    return done.returncode == 0


@contextmanager
def amqp_vhost(tag: str) -> Iterator[str]:
    """The URL of RabbitMQ at AMQP_URL in a vhost ``mirliton-test-<tag>-...`` of its own when
    rabbitmqctl can make one (deleted on the way out), else AMQP_URL; fails the test without a
    broker."""
    if not broker_reachable(AMQP_URL):
        pytest.fail(f"no RabbitMQ at {AMQP_URL}: the test command starts it (tests/services/setup.sh)")
    parts = urlsplit(AMQP_URL)
    vhost = f"mirliton-test-{tag}-{uuid.uuid4().hex[:8]}"
    user = parts.username or "guest"
    if rabbitmqctl("add_vhost", vhost) and rabbitmqctl("set_permissions", "-p", vhost, user,
                                                       ".*", ".*", ".*"):
        try:
            yield urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
        finally:
            rabbitmqctl("delete_vhost", vhost)
    else:
        yield AMQP_URL
