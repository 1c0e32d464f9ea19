#!/usr/bin/env bash
# Build the one-folder Linux app bundle: dist/slimline/slimline (GUI without
# arguments, CLI with). Prints the build time and the bundle size.
#   bash installers/build_bundle.sh            # default, no transformers (HF folders need it)
#   SLIMLINE_BUNDLE_HF=1 bash installers/...   # also bundle transformers/tokenizers
#   PYTHON=/path/to/venv/bin/python bash ...     # build with another environment (default $VENV/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-$VENV/bin/python}
DIST=${DIST:-dist}
WORK=${WORK:-build/pyinstaller}
start=$(date +%s)

if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  echo "build_bundle: installing PyInstaller (pinned in constraints.txt)"
  "$PY" -m pip install -q -c constraints.txt pyinstaller
fi
# The bundle copies this machine's xcb libraries: without them the packaged GUI cannot open windows.
for lib in libxcb-icccm.so.4 libxcb-keysyms.so.1 libxcb-cursor.so.0; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || echo "build_bundle: warning: $lib not found; run installers/setup_env.sh first"
done

# Install the wheel (not the editable checkout) into a private folder the analysis reads from.
rm -rf build/pyi-wheel build/pyi-site
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w build/pyi-wheel .
"$PY" -m pip install -q --no-deps --no-compile --target build/pyi-site build/pyi-wheel/slimline-*.whl

# Every module the app can reach (slimline's own, what its sources import, the lazily loaded parts
# of onnxruntime/torch.onnx/...), importable here with the bundle's exclusions: the spec collects
# exactly these and ships the list, and `slimline selfcheck` in the bundle imports each one.
mkdir -p build/pyi-selfcheck
PYTHONPATH="$PWD/build/pyi-site" QT_QPA_PLATFORM=offscreen "$PY" -W ignore -m slimline.gui.selfcheck \
  --list build/pyi-selfcheck/selfcheck_modules.json --exclude "$("$PY" installers/bundle_config.py excludes)"

SLIMLINE_SITE="$PWD/build/pyi-site" SLIMLINE_SELFCHECK_LIST="$PWD/build/pyi-selfcheck/selfcheck_modules.json" \
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" installers/slimline.spec

install -m 644 installers/slimline.desktop "$DIST/slimline/slimline.desktop"
install -m 644 resources/icons/slimline.png "$DIST/slimline/slimline.png"
install -m 644 resources/icons/slimline.svg "$DIST/slimline/slimline.svg"
end=$(date +%s)
size=$(du -sb "$DIST/slimline" | cut -f1)
echo "build_bundle: $DIST/slimline built in $((end - start)) s, $((size / 1000000)) MB"
echo "build_bundle: try  $DIST/slimline/slimline --version   and   $DIST/slimline/slimline inspect <model>"
