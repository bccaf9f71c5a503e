"""Callflow actions, one module each with one callback (Kazoo's gen_cf_action ``handle/2``):

    def handle(data: dict, call: Call) -> str | dict | None

The return value says where the executor goes next: a branch key (``"_"`` is the default
child; a failed bridge returns its ``"sip:<code>"`` and the executor falls back to ``"_"``),
a node to jump to (``callflow``), or None to stop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["ACTIONS", "action"]

ACTION_NAMES = ("answer", "callflow", "collect_dtmf", "conference", "device", "hangup", "menu",
                "play", "record_call", "response", "ring_group", "set_cid", "set_variables",
                "temporal_route", "tts", "user", "voicemail")

ACTIONS: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    name: importlib.import_module(f"actors.callflow.actions.{name}").handle for name in ACTION_NAMES
}


def action(module: str) -> Callable[[dict[str, Any], Any], Any] | None:
    return ACTIONS.get(module)
