"""``collect_dtmf``: collect up to ``max_digits`` (1) keys — ``timeout`` (5000 ms) for the
first, ``interdigit_timeout`` (2000 ms) between the next, ``terminators`` (["#"]) end it —
after an optional prompt ``media_id``, and keep them in the call's KVS (Kazoo's
``dtmf_collections``, under ``collection_name``, default "default") for the actions after it
(``Call.dtmf_collection``). Always ``"_"``."""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import ALL_DTMF, Call
from actors.callflow.media import media_name

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.collect_dtmf")


def handle(data: dict[str, Any], call: Call) -> str | None:
    call.answer()
    terminators = data.get("terminators")
    if terminators is None:
        terminators = [data["terminator"]] if data.get("terminator") else ["#"]
    terminators = [str(t) for t in terminators]
    media = media_name(call.account_id, data.get("media_id"))
    if media is not None:
        # A key pressed during the prompt stops it and counts as the first digit.
        call.play(media, ALL_DTMF)
    collected = call.collect_digits(
        max(1, int(data.get("max_digits") or 1)),
        timeout_ms=int(data.get("timeout") or 5000),
        interdigit_ms=int(data.get("interdigit_timeout") or 2000),
        terminators=terminators)
    name = str(data.get("collection_name") or "default")
    log.info("collect_dtmf: %d digit(s) into %r (%s)", len(collected.digits), name,
             collected.reason)
    call.set_dtmf_collection(name, collected.digits)
    return "_"
