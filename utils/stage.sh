#!/usr/bin/env bash
# Stage helpers shared by every egs/*/run.sh; source after utils/parse_options.sh.
#
#   if stage 3 "Compute fbank" data/fbank/.done; then
#     python -m icefall_ext.bin.compute_fbank ...
#     mark_done data/fbank/.done
#   fi
#
# `stage N DESC [DONE_MARKER]` prints "Stage N: DESC" and succeeds when stage <= N <= stop_stage and
# the done marker (if given) does not exist yet; a finished stage prints that it is skipped.
# Done markers are written last (mark_done), so a stage that failed half-way runs again.

log() {
  local caller
  caller=$(basename "${BASH_SOURCE[1]:-$0}")
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($caller:${BASH_LINENO[0]}) $*"
}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

stage() {
  local n=$1 desc=$2 marker=${3:-}
  if [ "$n" -lt "${stage:-0}" ] || [ "$n" -gt "${stop_stage:-1000}" ]; then
    return 1
  fi
  if [ -n "$marker" ] && [ -f "$marker" ]; then
    log "Stage $n: $desc (skipped: done, remove $marker to redo)"
    return 1
  fi
  log "Stage $n: $desc"
  return 0
}

mark_done() {
  local marker=$1
  mkdir -p "$(dirname "$marker")"
  date '+%Y-%m-%d %H:%M:%S' > "$marker.tmp" && mv "$marker.tmp" "$marker"
}

require() {
  # require PATH... : fail with a clear message when an input of a stage is missing.
  local p
  for p in "$@"; do
    [ -e "$p" ] || die "missing input $p (run the earlier stages first, or check the path)"
  done
}

pick() {
  # pick VAR REAL MINI : give VAR its default for the real corpus, or for --mini true, unless it was set.
  local var=$1
  [ -n "${!var}" ] && return 0
  if [ "${mini:-false}" = true ]; then printf -v "$var" '%s' "$3"; else printf -v "$var" '%s' "$2"; fi
}
