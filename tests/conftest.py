from __future__ import annotations

from collections.abc import Iterator
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
