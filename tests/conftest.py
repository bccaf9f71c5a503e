from __future__ import annotations

pytest_plugins = ["tests.couchdb_server"]
