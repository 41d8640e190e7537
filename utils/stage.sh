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
#
# Wall time: a stage that runs lasts until the next stage starts or the script exits; when it succeeds, its
# seconds go into the table $stage_times (default stage_times.tsv in the directory the recipe is in when the
# stage ends, i.e. its work dir): "stage<TAB>seconds<TAB>description", one row per stage, the latest run's.
#
# Paths given on the command line (or in a --config file) are relative to the directory the recipe is run from,
# although run.sh then cd's into its work dir; so, right after sourcing this file and before the cd:
#
#   abs_paths work_dir train dev init_from    # one path each (a path may hold spaces)
#   abs_paths --words mix_cuts                # a space-separated list of paths: each word is resolved
#
# `abs_paths [--words] VAR...` rewrites each relative value as "$PWD/value", normalised lexically ('.', '..' and
# repeated '/' removed; the path need not exist yet, e.g. a --work-dir that is still to be created). An absolute
# value is left as it is and an empty one stays empty, so defaults that a recipe sets later with `pick` (after the
# cd, meant relative to the work dir) keep their meaning: only values set by the user are resolved.

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
  _stage_close 0
  log "Stage $n: $desc"
  _stage_open=$n _stage_desc=$desc _stage_t0=$(date +%s)
  trap '_stage_close $?' EXIT
  return 0
}

_stage_close() {
  # _stage_close STATUS : record the open stage's wall time in $stage_times when STATUS is 0.
  local status=$1 table=${stage_times:-stage_times.tsv} seconds
  [ -n "${_stage_open:-}" ] || return 0
  if [ "$status" -eq 0 ]; then
    seconds=$(( $(date +%s) - _stage_t0 ))
    { [ -f "$table" ] && awk -F '\t' -v n="$_stage_open" '$1 != n' "$table"
      printf '%s\t%s\t%s\n' "$_stage_open" "$seconds" "$_stage_desc"; } | sort -n > "$table.tmp"
    mv "$table.tmp" "$table"
  fi
  _stage_open=
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

abs_path() {
  # abs_path PATH : print PATH made absolute against $PWD and normalised (empty and absolute paths unchanged).
  local p=$1 part IFS=/
  local -a parts stack=()
  case "$p" in ''|/*) printf '%s' "$p"; return 0 ;; esac
  read -r -a parts <<< "$PWD/$p"
  for part in "${parts[@]}"; do
    case "$part" in
      ''|.) ;;
      ..) [ ${#stack[@]} -eq 0 ] || unset 'stack[${#stack[@]}-1]' ;;
      *) stack+=("$part") ;;
    esac
  done
  printf '/%s' ${stack[@]+"${stack[@]}"}
}

abs_paths() {
  # abs_paths [--words] VAR... : resolve each VAR's value with abs_path (with --words: each word of it).
  local __ap_var __ap_words=false __ap_w __ap_out
  local -a __ap_list
  if [ "${1:-}" = --words ]; then __ap_words=true; shift; fi
  for __ap_var in "$@"; do
    if [ "$__ap_words" = true ]; then
      __ap_out=
      read -r -a __ap_list <<< "${!__ap_var:-}"  # split on blanks, no globbing
      for __ap_w in ${__ap_list[@]+"${__ap_list[@]}"}; do __ap_out+="${__ap_out:+ }$(abs_path "$__ap_w")"; done
      printf -v "$__ap_var" '%s' "$__ap_out"
    else
      printf -v "$__ap_var" '%s' "$(abs_path "${!__ap_var:-}")"
    fi
  done
}

head_first() {
  # head_first EXP FROM N HEAD_N TRAIN [ARGS...] : N updates from the model in FROM, of which the first HEAD_N train
  # what is new (heads, decoder) on the frozen encoder, in EXP/head, and the rest every parameter, in EXP, from there
  # (wav2vec 2.0's freeze_finetune_updates, as two runs with a warm-up each: a fresh head's first gradients would
  # otherwise rewrite a pre-trained encoder). TRAIN is a function called as `TRAIN EXP_DIR INIT_FROM ARG...` with
  # --max-updates, --warmup-updates (a tenth) and, for the head run, --freeze-encoder true among the ARGs.
  local exp=$1 from=$2 n=$3 head_n=$4 train=$5 rest
  shift 5
  [ "$head_n" -lt "$n" ] || die "head-first updates ($head_n) must be below the run's $n updates"
  if [ ! -f "$exp/head/.done" ]; then
    "$train" "$exp/head" "$from" --freeze-encoder true --max-updates "$head_n" --warmup-updates $((head_n / 10)) "$@"
    mark_done "$exp/head/.done"
  fi
  rest=$((n - head_n))
  "$train" "$exp" "$exp/head" --max-updates "$rest" --warmup-updates $((rest / 10)) "$@"
}
