"""System prompts: rendered with espeak-ng and sox, kept in the ``system_media`` database.

Kazoo keeps its system prompts in ``system_media``, one media document per prompt and
language with the audio as an attachment, ``_id`` = ``<language>%2F<prompt id>`` (e.g.
``en-us%2Fvm-enter_pass``), and looks them up by prompt id (``kz_media_util:get_prompt``).
The ids here follow Kazoo's (``vm-*`` voicemail, ``menu-*`` IVR, ``conf-*`` conference,
``digits-*`` for saying numbers).

:func:`install_prompts` renders each prompt's text with espeak-ng, converts it with sox to
8 kHz mono 16-bit WAV (what the media engine plays without resampling), and stores it. It is
idempotent: a prompt whose document already holds audio rendered from the same text and
settings is left alone. :func:`load_prompt` reads one back as audio for
:meth:`~actors.media.engine.MediaStream.play`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.media.audio import Pcm, load_audio, read_wav
from store.base import Store
from store.errors import NotFound
from store.kazoo import set_pvt_fields

__all__ = [
    "DEFAULT_LANGUAGE",
    "PROMPTS",
    "SYSTEM_MEDIA_DB",
    "InstallResult",
    "PromptToolsMissing",
    "decode_media",
    "install_prompts",
    "load_prompt",
    "load_stored_media",
    "message_count_prompts",
    "prompt_doc_id",
    "render_prompt",
    "say_number",
    "speak",
]

SYSTEM_MEDIA_DB = "system_media"
DEFAULT_LANGUAGE = "en-us"
ESPEAK_VOICE = {"en-us": "en-us"}
ESPEAK_SPEED = 150  # words per minute: espeak's default 175 is quick for menus on a phone
# Bumped when the rendering pipeline changes, so installed prompts are rendered again.
RENDER_VERSION = 2

# Kazoo's prompt ids (core/kazoo_media prompts, FreeSWITCH sound names for digits) -> text.
PROMPTS: dict[str, str] = {
    # voicemail
    "vm-enter_id": "Please enter your mailbox number, followed by the pound key.",
    "vm-enter_pass": "Please enter your password, followed by the pound key.",
    "vm-fail_auth": "Login incorrect.",
    "vm-abort": "Too many failed attempts. Goodbye.",
    "vm-you_have": "You have",
    "vm-new_message": "new message.",
    "vm-new_messages": "new messages.",
    "vm-saved_message": "saved message.",
    "vm-saved_messages": "saved messages.",
    "vm-no_messages": "You have no new messages.",
    "vm-no_more_messages": "You have no more messages.",
    "vm-main_menu": (
        "To listen to new messages, press 1. To listen to saved messages, press 2. "
        "To change your settings, press 5. To exit, press the pound key."
    ),
    "vm-message_menu": (
        "To replay this message, press 1. To save it, press 2. To delete it, press 7. "
        "For the next message, press 6. To return to the main menu, press 0."
    ),
    "vm-settings_menu": (
        "To record your unavailable greeting, press 1. To change your password, press 3. "
        "To return to the main menu, press 0."
    ),
    "vm-message_number": "Message number",
    "vm-received": "Received",
    "vm-saved": "Message saved.",
    "vm-deleted": "Message deleted.",
    "vm-person": "The person at extension",
    "vm-not_available": "is not available. Please leave a message after the tone.",
    "vm-record_message": "Please record your message after the tone. When you are done, "
                         "hang up or press the pound key.",
    "vm-record_greeting": "Record your greeting after the tone, then press the pound key.",
    "vm-review_recording": (
        "To listen to your recording, press 1. To save it, press 2. To record it again, "
        "press 3."
    ),
    "vm-greeting_saved": "Your greeting has been saved.",
    "vm-enter_new_pin": "Please enter your new password, followed by the pound key.",
    "vm-enter_new_pin_confirm": "Please enter your new password again to confirm it.",
    "vm-pin_set": "Your password has been changed.",
    "vm-mailbox_full": "The mailbox is full and cannot take any more messages.",
    "vm-thank_you": "Thank you.",
    "vm-goodbye": "Goodbye.",
    # menus (IVR)
    "menu-invalid_entry": "Invalid option.",
    "menu-no_entry": "I did not get an answer.",
    "menu-transferring_call": "Please hold while your call is transferred.",
    "menu-exit": "Goodbye.",
    # conference
    "conf-welcome": "Welcome to the conference.",
    "conf-enter_conf_number": "Please enter the conference number, followed by the pound key.",
    "conf-enter_conf_pin": "Please enter the conference pin, followed by the pound key.",
    "conf-bad_conf": "That conference number is not valid.",
    "conf-bad_pin": "That pin is not valid.",
    "conf-alone": "You are the only participant in this conference.",
    "conf-muted": "You are now muted.",
    "conf-unmuted": "You are no longer muted.",
    # system
    "system-goodbye": "Goodbye.",
    "system-press_1_to_listen": "To listen to your messages, press 1.",
    "system-not_authorized": "You are not allowed to make this call.",
    "system-no_route": "The number you have dialed is not in service.",
}
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
         80: "eighty", 90: "ninety"}
PROMPTS.update({f"digits-{n}": word for n, word in enumerate(_ONES)})
PROMPTS.update({f"digits-{n}": word for n, word in _TENS.items()})
PROMPTS.update({"digits-hundred": "hundred", "digits-thousand": "thousand"})
# Not speech: a 1 kHz beep rendered by sox (voicemail's "after the tone").
TONES: dict[str, tuple[float, float]] = {"tone-beep": (1000.0, 0.5)}


def say_number(n: int) -> list[str]:
    """The ``digits-*`` prompt ids that say ``n`` (0-999999) in English."""
    if not 0 <= n <= 999_999:
        raise ValueError("say_number covers 0..999999")
    if n < 20:
        return [f"digits-{n}"]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [f"digits-{tens * 10}"] + ([f"digits-{ones}"] if ones else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [f"digits-{hundreds}", "digits-hundred"] + (say_number(rest) if rest else [])
    thousands, rest = divmod(n, 1000)
    return say_number(thousands) + ["digits-thousand"] + (say_number(rest) if rest else [])


def message_count_prompts(count: int, *, saved: bool = False) -> list[str]:
    """"You have N new messages" as prompt ids (Kazoo's voicemail check greeting)."""
    if count == 0 and not saved:
        return ["vm-no_messages"]
    noun = "vm-saved_message" if saved else "vm-new_message"
    return ["vm-you_have", *say_number(count), noun if count == 1 else noun + "s"]


def prompt_doc_id(prompt_id: str, language: str = DEFAULT_LANGUAGE) -> str:
    """Kazoo's system prompt document id (``kz_media_util:prompt_id/2``)."""
    return f"{language}%2F{prompt_id}"


class PromptToolsMissing(RuntimeError):
    """espeak-ng or sox is not installed (Debian packages espeak-ng and sox)."""


@dataclass(frozen=True, slots=True)
class InstallResult:
    prompt_id: str
    doc_id: str
    status: str  # installed | updated | unchanged
    seconds: float


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PromptToolsMissing(
            f"{name} not found: install the Debian packages espeak-ng and sox "
            "(tests/services/setup.d/media.sh does)")
    return path


def _fingerprint(prompt_id: str, language: str) -> str:
    source = TONES.get(prompt_id) or PROMPTS[prompt_id]
    text = f"{RENDER_VERSION}|{language}|{ESPEAK_SPEED}|{source}"
    return hashlib.sha256(text.encode()).hexdigest()


def render_prompt(prompt_id: str, language: str = DEFAULT_LANGUAGE) -> bytes:
    """The prompt as an 8 kHz mono 16-bit WAV (espeak-ng speech or a sox tone)."""
    if prompt_id in TONES:
        sox = _tool("sox")
        frequency, seconds = TONES[prompt_id]
        with tempfile.TemporaryDirectory(prefix="mirliton-prompt-") as work:
            out = Path(work) / "out.wav"
            subprocess.run([sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(out),
                            "synth", str(seconds), "sine", str(frequency), "gain", "-6"],
                           check=True, capture_output=True, timeout=60)
            return out.read_bytes()
    if prompt_id not in PROMPTS:
        raise KeyError(f"unknown prompt {prompt_id}")
    return speak(PROMPTS[prompt_id], language)


def speak(text: str, language: str = DEFAULT_LANGUAGE, *, speed: int = ESPEAK_SPEED) -> bytes:
    """Text to speech as an 8 kHz mono 16-bit WAV (espeak-ng, then sox): the system prompts,
    and what the callflow ``tts`` action says."""
    if not text.strip():
        raise ValueError("nothing to say")
    sox = _tool("sox")
    espeak = _tool("espeak-ng")
    with tempfile.TemporaryDirectory(prefix="mirliton-tts-") as work:
        out = Path(work) / "out.wav"
        spoken = Path(work) / "spoken.wav"
        voice = ESPEAK_VOICE.get(language.lower(), language.lower())
        # The text goes on stdin, never on the command line: it may come from an account's
        # callflow, and a leading "-" must not be taken for an option.
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(spoken), "--stdin"],
                       input=text.encode(), check=True, capture_output=True, timeout=60)
        # Telephone band: 8 kHz mono 16-bit, peak-normalised to -3 dBFS, with the quiet
        # espeak leaves at both ends trimmed to keep menus snappy.
        subprocess.run([sox, str(spoken), "-r", "8000", "-c", "1", "-b", "16", str(out),
                        "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02",
                        "0.5%", "reverse", "gain", "-n", "-3"],
                       check=True, capture_output=True, timeout=60)
        return out.read_bytes()


def install_prompts(
    store: Store,
    prompt_ids: Iterable[str] | None = None,
    *,
    language: str = DEFAULT_LANGUAGE,
    force: bool = False,
    progress: Callable[[InstallResult], None] | None = None,
) -> list[InstallResult]:
    """Render and store the prompts (all by default); unchanged ones are skipped."""
    store.create_db(SYSTEM_MEDIA_DB, exist_ok=True)
    wanted = list(prompt_ids) if prompt_ids is not None else [*PROMPTS, *TONES]
    results: list[InstallResult] = []
    for prompt_id in wanted:
        if prompt_id not in PROMPTS and prompt_id not in TONES:
            raise KeyError(f"unknown prompt {prompt_id}")
        result = _install_one(store, prompt_id, language, force)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _install_one(store: Store, prompt_id: str, language: str, force: bool) -> InstallResult:
    doc_id = prompt_doc_id(prompt_id, language)
    fingerprint = _fingerprint(prompt_id, language)
    attachment = f"{prompt_id}.wav"
    existing: dict[str, Any] | None
    try:
        existing = store.get(SYSTEM_MEDIA_DB, doc_id)
    except NotFound:
        existing = None
    if (existing is not None and not force
            and existing.get("pvt_render_fingerprint") == fingerprint
            and attachment in (existing.get("_attachments") or {})):
        return InstallResult(prompt_id, doc_id, "unchanged",
                             float(existing.get("duration_ms", 0)) / 1000)
    audio = render_prompt(prompt_id, language)
    seconds = len(read_wav(audio)) / 8000
    doc: dict[str, Any] = {
        "_id": doc_id,
        "name": f"{language}/{prompt_id}",
        "prompt_id": prompt_id,
        "language": language,
        "description": (f"{TONES[prompt_id][0]:g} Hz tone" if prompt_id in TONES
                        else PROMPTS[prompt_id]),
        "media_source": "upload",
        "source_type": "mirliton_prompts",
        "streamable": True,
        "content_type": "audio/x-wav",
        "content_length": len(audio),
        "duration_ms": int(round(seconds * 1000)),
        "pvt_render_fingerprint": fingerprint,
    }
    if existing is not None:
        doc["_rev"] = existing["_rev"]
        if "_attachments" in existing:
            doc["_attachments"] = existing["_attachments"]
        doc["pvt_created"] = existing.get("pvt_created")
    doc = set_pvt_fields({k: v for k, v in doc.items() if v is not None}, "media")
    saved = store.put(SYSTEM_MEDIA_DB, doc)
    store.put_attachment(SYSTEM_MEDIA_DB, doc_id, attachment, audio,
                         content_type="audio/x-wav", rev=saved["_rev"])
    return InstallResult(prompt_id, doc_id, "updated" if existing else "installed", seconds)


_SOX_TYPES = {"audio/mp3": "mp3", "audio/mpeg": "mp3", "audio/mpeg3": "mp3",
              "audio/ogg": "ogg"}


def decode_media(data: bytes, content_type: str) -> Pcm:
    """Uploaded audio as 8 kHz int16: WAV directly; MP3 / Ogg through sox (MP3 needs sox's
    mp3 format module); ValueError when it cannot be read."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("audio/x-wav", "audio/wav", "audio/wave"):
        return read_wav(data)
    if kind in ("audio/basic", "audio/pcmu"):
        return load_audio(data, encoding="PCMU")
    if kind not in _SOX_TYPES:
        raise ValueError(f"cannot play {content_type}")
    sox = _tool("sox")
    done = subprocess.run([sox, "-t", _SOX_TYPES[kind], "-", "-r", "8000", "-c", "1", "-b",
                           "16", "-t", "wav", "-"], input=data, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise ValueError(f"sox cannot read this {content_type}: "
                         f"{done.stderr.decode(errors='replace').strip()[:200]}")
    return read_wav(done.stdout)


def load_stored_media(store: Store, db: str, doc_id: str,
                      attachment: str | None = None) -> Pcm:
    """A media document's audio (an account's upload: Crossbar stores it as ``audio``; or any
    document with an audio attachment), ready for :meth:`MediaStream.play`."""
    doc = store.get(db, doc_id)
    attachments = doc.get("_attachments") or {}
    name = attachment or ("audio" if "audio" in attachments else next(iter(attachments), None))
    if name is None:
        raise NotFound(f"media {doc_id} has no audio", db=db, doc_id=doc_id)
    data, content_type = store.get_attachment(db, doc_id, name)
    return decode_media(data, content_type or str(doc.get("content_type", "")))


def load_prompt(store: Store, prompt_id: str, language: str = DEFAULT_LANGUAGE) -> Pcm:
    """A system prompt's audio (8 kHz int16) from ``system_media``; NotFound when it is not
    installed."""
    data, _ = store.get_attachment(SYSTEM_MEDIA_DB, prompt_doc_id(prompt_id, language),
                                   f"{prompt_id}.wav")
    return read_wav(data)
