"""``play``: play a media (``data.id``: a media document of the account, a system prompt id,
a ``/db/doc`` path or a tone/silence stream), answering first unless ``answer`` is false;
``terminators`` (default every key) stop it, ``loop_count`` repeats it. Always ``"_"``."""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import ALL_DTMF, Call
from actors.callflow.media import media_name

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.play")


def handle(data: dict[str, Any], call: Call) -> str | None:
    media = media_name(call.account_id, data.get("id"))
    if media is None:
        log.warning("play: no media id")
        return "_"
    if data.get("answer") is not False:
        call.answer()
    terminators = data.get("terminators")
    call.play(media, ALL_DTMF if terminators is None else [str(t) for t in terminators],
              language=data.get("language"), loop_count=int(data.get("loop_count") or 0),
              endless=bool(data.get("endless_playback")))
    return "_"
