"""What a calls shard needs around its media engine: turning a command's ``Media-Name`` into
audio, storing recordings, and the recordings directory.

``Media-Name`` forms (Kazoo's, as ecallmgr hands them to FreeSWITCH):

- ``/system_media/<prompt id>``: a system prompt (``actors.media.prompts``) in the command's
  ``Language``; ``prompt://<prompt id>`` is the same.
- ``/<db>/<doc id>``: a media document's first audio attachment (an account's upload) or a
  voicemail message; the database name %2F-encoded as Kazoo writes it.
- ``tone_stream://[L=<loops>;]%(<on ms>,<off ms>,<freq>[,<freq>...])[;%(...)]``: FreeSWITCH's
  tone syntax.
- ``silence_stream://<ms>``.

System prompts and TTS renderings are cached (LRU, per shard process): they are the same
for every call. Account media and messages are read from the store each time (they change).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import OrderedDict
from pathlib import Path
from urllib.parse import unquote

import gevent
import numpy as np

from actors.media.audio import Pcm, read_wav
from actors.media.prompts import DEFAULT_LANGUAGE, load_prompt, load_stored_media, speak
from protocols.rtp.tones import ToneSpec, ToneStep
from store import Conflict, NotFound, Store, StoreError

__all__ = [
    "MIN_STORED_SECONDS",
    "MediaLibrary",
    "MediaNotFound",
    "parse_destination",
    "parse_tone_stream",
    "clear_leftovers",
    "recordings_dir",
    "store_recording",
]

log = logging.getLogger("mirliton.calls.media")

# Shorter recordings are not stored (a caller who hung up at the beep left no message).
MIN_STORED_SECONDS = 0.5
_TONE = re.compile(r"%\(\s*(\d+)\s*,\s*(\d+)\s*((?:,\s*[\d.]+\s*)+)\)")


class MediaNotFound(LookupError):
    """The media a command names does not exist or cannot be decoded."""


def parse_tone_stream(uri: str) -> ToneSpec:
    """``tone_stream://[L=n;]%(on,off,f1[,f2...])[;%(...)]`` -> a ToneSpec (L: times through
    the cadence; without it the tone plays until stopped, as FreeSWITCH's does)."""
    body = uri.split("://", 1)[1] if "://" in uri else uri
    repeat = 0
    steps: list[ToneStep] = []
    for part in body.split(";"):
        part = part.strip()
        if not part:
            continue
        if part.upper().startswith("L="):
            try:
                repeat = max(0, int(part[2:]))
            except ValueError as error:
                raise MediaNotFound(f"bad loop count in {uri!r}") from error
            continue
        match = _TONE.fullmatch(part)
        if match is None:
            raise MediaNotFound(f"cannot read tone {part!r}")
        frequencies = tuple(float(f) for f in match.group(3).split(",") if f.strip())
        steps.append(ToneStep(frequencies, int(match.group(1)), int(match.group(2))))
    if not steps:
        raise MediaNotFound(f"no tone in {uri!r}")
    return ToneSpec(tuple(steps), repeat=repeat)


def parse_destination(destination: str) -> tuple[str, str]:
    """``store://<%2F-encoded db>/<doc id>`` -> (database name, document id)."""
    if not destination.startswith("store://"):
        raise ValueError(f"not a store destination: {destination!r}")
    db, _, doc_id = destination[len("store://"):].rpartition("/")
    if not db or not doc_id:
        raise ValueError(f"not a store destination: {destination!r}")
    return unquote(db), unquote(doc_id)


class MediaLibrary:
    """Audio for ``play``/``tts`` commands, from the store, cached where it is shared."""

    def __init__(self, store: Store | None, cache_size: int = 256) -> None:
        self.store = store
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Pcm] = OrderedDict()

    def _cached(self, key: tuple[str, str]) -> Pcm | None:
        pcm = self._cache.get(key)
        if pcm is not None:
            self._cache.move_to_end(key)
        return pcm

    def _keep(self, key: tuple[str, str], pcm: Pcm) -> Pcm:
        self._cache[key] = pcm
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pcm

    def resolve(self, name: str, language: str | None = None) -> Pcm | ToneSpec:
        """The audio (8 kHz int16) or the tone a Media-Name stands for; MediaNotFound."""
        language = (language or DEFAULT_LANGUAGE).lower()
        if name.startswith("tone_stream://"):
            return parse_tone_stream(name)
        if name.startswith("silence_stream://"):
            try:
                ms = int(name.split("://", 1)[1].split(",", 1)[0] or 0)
            except ValueError as error:
                raise MediaNotFound(f"bad silence {name!r}") from error
            return np.zeros(max(0, ms) * 8, dtype=np.int16)
        if name.startswith("prompt://"):
            name = "/system_media/" + name[len("prompt://"):].split("/", 1)[0]
        if self.store is None:
            raise MediaNotFound("no store to read media from")
        path = name.lstrip("/")
        db, _, doc_id = path.rpartition("/")
        if not db or not doc_id:
            raise MediaNotFound(f"cannot read media name {name!r}")
        db, doc_id = unquote(db), unquote(doc_id)
        try:
            if db == "system_media":
                key = ("prompt", f"{language}/{doc_id}")
                pcm = self._cached(key)
                if pcm is None:
                    try:
                        pcm = load_prompt(self.store, doc_id, language)
                    except NotFound:
                        if language == DEFAULT_LANGUAGE:
                            raise
                        pcm = load_prompt(self.store, doc_id, DEFAULT_LANGUAGE)
                    self._keep(key, pcm)
                return pcm
            return load_stored_media(self.store, db, doc_id)
        except (NotFound, ValueError) as error:
            raise MediaNotFound(f"{name}: {error}") from error

    def tts(self, text: str, language: str | None = None) -> Pcm:
        """Text to speech with espeak-ng (rendered once per text and language)."""
        language = (language or DEFAULT_LANGUAGE).lower()
        key = ("tts", f"{language}/{text}")
        pcm = self._cached(key)
        if pcm is None:
            try:
                pcm = read_wav(speak(text, language))
            except Exception as error:  # noqa: BLE001 - espeak-ng missing or failing
                raise MediaNotFound(f"cannot speak: {error}") from error
            self._keep(key, pcm)
        return pcm


def recordings_dir(data_dir: Path | str, shard: int) -> Path:
    return Path(data_dir) / "recordings" / f"shard{shard}"


def clear_leftovers(directory: Path) -> int:
    """Remove what a killed predecessor left in the shard's recordings directory: a partial
    recording belongs to a call that is gone, and whose voicemail was never saved (the
    message document is written only after a recording is stored), so it is dropped rather
    than turned into a message nobody can attribute. Returns how many files went."""
    if not directory.exists():
        return 0
    count = 0
    for path in directory.iterdir():
        if path.is_file():
            path.unlink(missing_ok=True)
            count += 1
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            count += 1
    return count


def store_recording(store: Store | None, destination: str, name: str, path: Path, *,
                    attempts: int = 6, backoff: float = 0.5) -> bool:
    """Store the WAV at ``path`` as attachment ``name`` of the destination's document (the
    database and the document are created when missing). A store that is down is retried
    with growing pauses (about 10 s in all); False when it never took it (logged)."""
    if store is None:
        log.error("recording %s not stored: the shard has no store", path.name)
        return False
    db, doc_id = parse_destination(destination)
    data = path.read_bytes()
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            try:
                rev: str | None = store.get(db, doc_id)["_rev"]
            except NotFound as error:
                if getattr(error, "reason", "") == "no_db_file" or not store.db_exists(db):
                    store.create_db(db, exist_ok=True)
                rev = None
            store.put_attachment(db, doc_id, name, data, content_type="audio/wav", rev=rev)
            return True
        except Conflict:
            continue  # written meanwhile: read the new revision and try again
        except StoreError as error:
            log.warning("storing recording %s into %s/%s failed (attempt %d/%d): %s",
                        name, db, doc_id, attempt, attempts, error)
        except OSError as error:
            log.warning("storing recording %s: store unreachable (attempt %d/%d): %s",
                        name, attempt, attempts, error)
        gevent.sleep(delay)
        delay = min(delay * 2, 4.0)
    # Kept where a restarted shard does not clear it, for an operator to store by hand.
    unstored = path.parent.parent / "unstored"
    unstored.mkdir(parents=True, exist_ok=True)
    kept = unstored / f"{db.replace('/', '%2F')}--{doc_id}--{name}"
    shutil.move(str(path), kept)
    log.error("recording %s NOT stored into %s/%s after %d attempts; kept at %s", name, db,
              doc_id, attempts, kept)
    return False
