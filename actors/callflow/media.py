"""Media names the callflow actions hand to the shard's ``play`` (Kazoo's kz_media_util).

- ``/system_media/<prompt id>``: a system prompt (actors/media/prompts.py ids);
- ``/<%2F-encoded db>/<doc id>``: an account media document, or a voicemail message in a
  month database;
- ``tone_stream://...`` and ``silence_stream://<ms>`` pass through (FreeSWITCH syntax);
- ``store://<%2F-encoded db>/<doc id>``: where the shard stores a recording.
"""

from __future__ import annotations

from typing import Any

from actors.media.prompts import PROMPTS, message_count_prompts, say_number
from store.kazoo import account_db_name, encode_db_name
from store.voicemail import message_db

__all__ = [
    "BEEP",
    "account_media",
    "media_name",
    "message_count_prompts",
    "message_media",
    "prompt",
    "prompts",
    "say_digits",
    "say_number",
    "store_destination",
]

# Voicemail's "after the tone": 1 kHz for half a second, once (without L= a tone_stream plays
# until stopped, as FreeSWITCH's does).
BEEP = "tone_stream://L=1;%(500,100,1000)"
_PASS_THROUGH = ("/", "tone_stream://", "silence_stream://", "http://", "https://")


def prompt(prompt_id: str) -> str:
    return f"/system_media/{prompt_id}"


def prompts(prompt_ids: list[str]) -> list[str]:
    return [prompt(p) for p in prompt_ids]


def say_digits(number: str) -> list[str]:
    """A number said digit by digit ("the person at extension one zero one")."""
    return [prompt(f"digits-{d}") for d in number if d.isdigit()]


def account_media(account_id: str, media_id: str) -> str:
    return f"/{encode_db_name(account_db_name(account_id))}/{media_id}"


def message_media(account_id: str, message_id: str) -> str:
    return f"/{encode_db_name(message_db(account_id, message_id))}/{message_id}"


def store_destination(db: str, doc_id: str) -> str:
    return f"store://{encode_db_name(db)}/{doc_id}"


def media_name(account_id: str, media_id: Any) -> str | None:
    """What to play for a ``media_id`` found in a document or in callflow data: a path or
    stream passes through, ``prompt://<id>`` or a known prompt id is a system prompt,
    anything else is a media document of the account. None when there is nothing."""
    if not media_id or not isinstance(media_id, str):
        return None
    if media_id.startswith(_PASS_THROUGH):
        return media_id
    if media_id.startswith("prompt://"):
        return prompt(media_id.removeprefix("prompt://").rsplit("/", 1)[-1])
    if media_id in PROMPTS:
        return prompt(media_id)
    return account_media(account_id, media_id)
