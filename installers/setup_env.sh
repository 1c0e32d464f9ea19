#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian libraries Qt needs, a virtual
# environment with pinned packages, and an editable install of Slimline.
# A second run only checks stamps and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.slimline-installed"

# Debian packages: Qt's xcb plugin (real windows), Xvfb (screenshots/headless
# windows). The offscreen platform needs only libEGL/fontconfig/xkbcommon.
DEB_PKGS="libegl1 libgl1 libfontconfig1 libxkbcommon0 libxkbcommon-x11-0 libdbus-1-3 \
libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 xvfb xauth"
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $DEB_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null \
      || echo "setup: warning: could not install$missing (GUI windows may not open; offscreen tests still run)"
  fi
fi

hash_inputs() { cat pyproject.toml setup.py constraints.txt | sha256sum | cut -d' ' -f1; }
want=$(hash_inputs)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt torch==2.13.0
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,hf,llm,ray]"
echo "$want" > "$STAMP"
echo "setup: environment ready in $VENV"
