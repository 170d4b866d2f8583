#!/usr/bin/env bash
# Installs what egs/mini/local/make_corpus.py needs, when missing: espeak-ng (speech), fluidsynth (music) and the
# General MIDI soundfont fluid-soundfont-gm (/usr/share/sounds/sf2/FluidR3_GM.sf2). Debian/Ubuntu (apt-get).
set -euo pipefail
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || [ -n "${AUDIOCODEC_SOUNDFONT:-}" ] || need+=(fluid-soundfont-gm)
if [ ${#need[@]} -eq 0 ]; then
    echo "install_tools: espeak-ng, fluidsynth and the GM soundfont are already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_tools: need root to run: apt-get install ${need[*]}" >&2; exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_tools: no apt-get here; install ${need[*]} with your package manager" >&2; exit 1
fi
echo "install_tools: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
