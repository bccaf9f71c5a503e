from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.couchdb_server"]


@pytest.fixture
def phones() -> Iterator[list[Any]]:
    """Phones (tests/phones) made in a test, stopped when it ends."""
    made: list[Any] = []
    yield made
    for phone in made:
        phone.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Any]:
    """The callflow app against a local bus and an embedded store, the test playing the calls
    shard (tests/callflow/conftest.py's Harness): the callflow and MWI tests."""
    from tests.callflow.conftest import Harness

    data_dir = tmp_path / "node"
    data_dir.mkdir()
    h = Harness(data_dir)
    yield h
    h.close()
