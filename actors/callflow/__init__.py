"""The callflow app: number matching, one executor per call, one module per action."""

from __future__ import annotations

__all__: list[str] = []
