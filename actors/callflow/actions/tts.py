"""``tts``: speak ``data.text`` (at most 1000 characters, Kazoo's limit) in ``language``,
answering first; ``terminators`` (default every key) stop it. Always ``"_"``."""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import ALL_DTMF, Call

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.tts")

MAX_TEXT = 1000


def handle(data: dict[str, Any], call: Call) -> str | None:
    text = str(data.get("text") or "").strip()[:MAX_TEXT]
    if not text:
        log.warning("tts: no text")
        return "_"
    if data.get("answer") is not False:
        call.answer()
    terminators = data.get("terminators")
    call.tts(text, ALL_DTMF if terminators is None else [str(t) for t in terminators],
             language=data.get("language") or call.account.get("language") or None,
             voice=data.get("voice"))
    return "_"
