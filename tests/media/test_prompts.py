"""System prompts: rendered with espeak-ng and sox into 8 kHz mono 16-bit WAV, stored in
system_media as Kazoo media documents with the audio attached, idempotently; played by the
engine."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from actors.media import MediaEngine, PlaybackFinished, read_wav
from actors.media.prompts import (
    PROMPTS,
    SYSTEM_MEDIA_DB,
    decode_media,
    install_prompts,
    load_prompt,
    load_stored_media,
    message_count_prompts,
    prompt_doc_id,
    say_number,
    speak,
)
from store import open_store
from tests.media.rtp_peer import RtpPeer, dominant_frequencies, wait_for

REPO = Path(__file__).resolve().parent.parent.parent
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox come from tests/services/setup.d/media.sh")


def test_say_number_and_message_counts() -> None:
    assert say_number(0) == ["digits-0"]
    assert say_number(15) == ["digits-15"]
    assert say_number(40) == ["digits-40"]
    assert say_number(42) == ["digits-40", "digits-2"]
    assert say_number(305) == ["digits-3", "digits-hundred", "digits-5"]
    assert say_number(2019) == ["digits-2", "digits-thousand", "digits-19"]
    assert say_number(12345) == ["digits-12", "digits-thousand", "digits-3", "digits-hundred",
                                 "digits-40", "digits-5"]
    assert message_count_prompts(1) == ["vm-you_have", "digits-1", "vm-new_message"]
    assert message_count_prompts(3) == ["vm-you_have", "digits-3", "vm-new_messages"]
    assert message_count_prompts(2, saved=True)[-1] == "vm-saved_messages"
    assert message_count_prompts(0) == ["vm-no_messages"]
    for n in range(0, 1200, 7):
        assert all(p in PROMPTS for p in say_number(n)), n


@needs_tools
def test_install_renders_stores_and_is_idempotent(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    wanted = ["vm-enter_pass", "digits-7", "menu-invalid_entry", "tone-beep"]
    first = install_prompts(store, wanted)
    assert [r.status for r in first] == ["installed"] * 4
    for prompt_id in wanted:
        doc = store.get(SYSTEM_MEDIA_DB, prompt_doc_id(prompt_id))
        assert doc["_id"] == f"en-us%2F{prompt_id}"
        assert (doc["prompt_id"], doc["language"], doc["pvt_type"]) == (prompt_id, "en-us", "media")
        assert doc["content_type"] == "audio/x-wav" and doc["streamable"] is True
        data, content_type = store.get_attachment(SYSTEM_MEDIA_DB, doc["_id"], f"{prompt_id}.wav")
        assert content_type == "audio/x-wav" and len(data) == doc["content_length"]
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        assert len(pcm) > 0.3 * 8000
        assert np.abs(pcm.astype(np.int32)).mean() > 300, prompt_id  # speech, not silence
    beep = load_prompt(store, "tone-beep")
    assert dominant_frequencies(beep) == [1000.0]
    again = install_prompts(store, wanted)
    assert [r.status for r in again] == ["unchanged"] * 4
    revs = {p: store.get(SYSTEM_MEDIA_DB, prompt_doc_id(p))["_rev"] for p in wanted}
    forced = install_prompts(store, ["digits-7"], force=True)
    assert forced[0].status == "updated"
    assert store.get(SYSTEM_MEDIA_DB, prompt_doc_id("digits-7"))["_rev"] != revs["digits-7"]
    store.close()


@needs_tools
def test_cli_prompts_install_json(tmp_path: Path) -> None:
    # In a process of its own: the CLI monkey-patches the interpreter with gevent.
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mirliton", "prompts", "install", "--data-dir",
             str(tmp_path), *extra], capture_output=True, text=True, timeout=120, cwd=REPO,
            env={**os.environ, "MIRLITON_CONFIG": ""})

    result = run("--only", "vm-goodbye,digits-3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["installed"], report["unchanged"]) == (2, 0)
    assert {p["prompt_id"] for p in report["prompts"]} == {"vm-goodbye", "digits-3"}
    again = run("--only", "vm-goodbye,digits-3", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["unchanged"] == 2
    bad = run("--only", "no-such-prompt")
    assert bad.returncode == 1 and "no-such-prompt" in bad.stderr


@needs_tools
def test_stored_prompt_plays_on_a_stream(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    install_prompts(store, ["vm-goodbye"])
    prompt = load_prompt(store, "vm-goodbye")
    store.close()
    events: list = []
    engine = MediaEngine("127.0.0.1", 45000, 45100).start()
    peer = RtpPeer()
    try:
        stream = engine.open_stream(events.append)
        stream.set_remote(*peer.address)
        stream.play(prompt)
        wait_for(lambda: [e for e in events if isinstance(e, PlaybackFinished)])
        wait_for(lambda: len(peer.received) >= len(prompt) // 160)
        heard = peer.audio()
        assert abs(len(heard) - len(prompt)) < 160
        assert np.abs(heard.astype(np.int32)).mean() > 300
    finally:
        peer.close()
        engine.stop()


@needs_tools
def test_speak_arbitrary_text() -> None:
    pcm = read_wav(speak("-v Press 9 to talk to sales."))  # not taken for an option
    assert len(pcm) > 8000  # more than a second of speech
    assert np.abs(pcm.astype(np.int32)).mean() > 300
    with pytest.raises(ValueError):
        speak("   ")


@needs_tools
def test_prompt_sequence_and_uploaded_media(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    ids = message_count_prompts(3)
    install_prompts(store, ids)
    parts = [load_prompt(store, p) for p in ids]
    # An account's upload (Crossbar keeps it as the "audio" attachment), here an Ogg file.
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(tmp_path / "up.ogg"), "synth",
                    "0.5", "sine", "600"], check=True, capture_output=True)
    store.create_db("account/ab/cd/uploads", exist_ok=True)
    rev = store.put("account/ab/cd/uploads", {"_id": "greeting", "name": "greeting"})["_rev"]
    store.put_attachment("account/ab/cd/uploads", "greeting", "audio",
                         (tmp_path / "up.ogg").read_bytes(), content_type="audio/ogg", rev=rev)
    upload = load_stored_media(store, "account/ab/cd/uploads", "greeting")
    assert abs(len(upload) - 4000) < 160 and dominant_frequencies(upload) == [600.0]
    with pytest.raises(ValueError):
        decode_media(b"not audio", "audio/ogg")
    store.close()
    events: list = []
    engine = MediaEngine("127.0.0.1", 45000, 45100).start()
    peer = RtpPeer()
    try:
        stream = engine.open_stream(events.append)
        stream.set_remote(*peer.address)
        stream.play([*parts, upload])
        wait_for(lambda: [e for e in events if isinstance(e, PlaybackFinished)])
        expected = sum(len(p) for p in parts) + len(upload)
        wait_for(lambda: len(peer.received) >= expected // 160)
        assert abs(len(peer.audio()) - expected) < 160  # one operation, every part played
    finally:
        peer.close()
        engine.stop()
