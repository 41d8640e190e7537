#!/usr/bin/env bash
# Install icefall_ext and everything it needs into the active Python environment.
#
#   bash utils/install.sh            # torch (kept if present), requirements, the package, espeak-ng
#
# torch: an already-installed torch (e.g. a CUDA build) is kept as it is. Otherwise torch==$TORCH_VERSION is
# installed; on a CPU-only machine pass e.g. PIP_EXTRA_INDEX_URL for a CPU wheel index if your pip would pull CUDA.
# System packages (espeak-ng and the fortunes text packages for the mini corpus, ffmpeg for audio) are installed
# with apt-get when missing and we are root (or sudo works); otherwise a clear message says what to install.
set -euo pipefail
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "[install] $*"; }

missing=()
for bin in espeak-ng ffmpeg; do command -v "$bin" >/dev/null 2>&1 || missing+=("$bin"); done
# real sentences for the mini corpus (local/mini_corpus_text.py): English, German, Spanish, Italian, Russian
fortunes=${FORTUNES_DIR:-/usr/share/games/fortunes}
[ -f "$fortunes/fortunes" ] || missing+=(fortunes)
for l in de es it ru; do [ -d "$fortunes/$l" ] || missing+=("fortunes-$l"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo_" ]; then
    log "apt-get install ${missing[*]}"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[install] error: please install these system packages first: ${missing[*]}" >&2
    exit 1
  fi
fi

if $PYTHON -c "import torch" >/dev/null 2>&1; then
  log "keeping installed torch $($PYTHON -c 'import torch; print(torch.__version__)')"
else
  log "installing torch==$TORCH_VERSION"
  $PYTHON -m pip install -q "torch==$TORCH_VERSION"
fi
log "installing requirements"
$PYTHON -m pip install -q -r "$root/requirements.txt"
log "installing icefall_ext (editable)"
$PYTHON -m pip install -q --no-deps --no-build-isolation -e "$root"
log "done: $($PYTHON -c 'import icefall_ext, torch, lhotse; print("icefall_ext", icefall_ext.__version__, "torch", torch.__version__, "lhotse", lhotse.__version__)')"
