#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts; source it after declaring the variables:
#
#   stage=0
#   stop_stage=100
#   mini=false
#   . utils/parse_options.sh
#
# Every variable declared before sourcing can be set as `--name value` or `--name=value`
# (dashes in NAME map to underscores: --stop-stage sets stop_stage). `--help` / `-h` prints the
# calling script's header comment (the comment block after the shebang) and exits 0.
# An unknown option, or an option without a value, is a one-line error with exit status 1.
# Positional arguments after the options are left in "$@".
# `--config FILE` (any number of times) sources FILE, a shell fragment of `name=value` lines, before the
# other options are applied, so that options on the command line override the file (as in Kaldi).

__po_script=${0}
__po_help() {
  # Print the first comment block of the calling script, without the leading '# '.
  awk 'NR == 1 && /^#!/ { next }
       /^#/ { sub(/^# ?/, ""); print; seen = 1; next }
       seen { exit }' "$__po_script"
}

__po_i=1
while [ "$__po_i" -le $# ]; do
  case "${!__po_i}" in
    --config|--config=*)
      if [ "${!__po_i}" = --config ]; then __po_i=$((__po_i + 1)); __po_cfg=${!__po_i:-}; else
        __po_cfg=${!__po_i#--config=}; fi
      if [ ! -f "$__po_cfg" ]; then
        echo "$(basename "$__po_script"): config file '${__po_cfg}' not found" >&2
        exit 1
      fi
      . "$__po_cfg" ;;
  esac
  __po_i=$((__po_i + 1))
done
while [ $# -gt 0 ]; do
  case "$1" in
    --config) shift 2; continue ;;
    --config=*) shift; continue ;;
    -h|--help)
      __po_help
      exit 0 ;;
    --*=*)
      __po_name=${1%%=*}; __po_value=${1#*=}; shift ;;
    --*)
      __po_name=$1
      if [ $# -lt 2 ]; then
        echo "$(basename "$__po_script"): option $1 needs a value (see --help)" >&2
        exit 1
      fi
      __po_value=$2; shift 2 ;;
    *)
      break ;;
  esac
  __po_var=${__po_name#--}
  __po_var=${__po_var//-/_}
  if ! [[ $__po_var =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_var+set}" ]; then
    echo "$(basename "$__po_script"): unknown option $__po_name (see --help)" >&2
    exit 1
  fi
  printf -v "$__po_var" '%s' "$__po_value"
done
unset __po_name __po_value __po_var __po_i __po_cfg
true
