#!/usr/bin/env bash
# Prompt rendering for the media tests and `mirliton prompts install`: espeak-ng (text to
# speech) and sox (resampling to 8 kHz mono 16-bit, tones, mp3 for voicemail). Debian packages. $1 is the
# repository root. Idempotent: nothing is installed when both commands are already there.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
# Voicemail boxes ask for mp3 by default (Kazoo's media_extension): sox writes it with this.
if ! command -v sox >/dev/null 2>&1 || ! sox -h 2>/dev/null | grep -q 'FILE FORMATS.*mp3'; then
  need+=(libsox-fmt-mp3)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
