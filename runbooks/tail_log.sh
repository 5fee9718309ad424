#!/usr/bin/env bash
# Last N lines of a log file from an allowlisted directory. argv: DIR FILE [--lines N]
set -euo pipefail

dir_key="${1:?usage: tail_log DIR FILE [--lines N]}"
file="${2:?usage: tail_log DIR FILE [--lines N]}"
lines=100
shift 2
while [ "$#" -gt 0 ]; do
  case "$1" in
    --lines) lines="${2:?--lines needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$dir_key" in
  app) base=/var/log/app ;;
  was) base=/app/was/logs ;;
  web) base=/var/log/nginx ;;
  *) echo "directory is not on this runbook's allowlist" >&2; exit 2 ;;
esac
case "$file" in
  ''|.*|*/*) echo "file must be a plain file name" >&2; exit 2 ;;
esac
case "$lines" in ''|*[!0-9]*) echo "--lines must be a number" >&2; exit 2 ;; esac

# Resolve symlinks and refuse anything that lands outside the allowlisted directory.
real_base=$(readlink -f -- "$base") || { echo "log directory does not exist" >&2; exit 2; }
target=$(readlink -f -- "$base/$file") || { echo "no such log file" >&2; exit 2; }
case "$target" in
  "$real_base"/*) ;;
  *) echo "file resolves outside the allowed directory" >&2; exit 2 ;;
esac
[ -f "$target" ] || { echo "no such log file" >&2; exit 2; }

tail -n "$lines" -- "$target"
