"""The cdr app: one CDR per call leg from CHANNEL_DESTROY into the account's month database."""

from __future__ import annotations

__all__: list[str] = []
