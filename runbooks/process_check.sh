#!/usr/bin/env bash
# Is a process running? argv: NAME [--min COUNT]
set -euo pipefail

name="${1:?usage: process_check NAME [--min COUNT]}"
min=1
shift
while [ "$#" -gt 0 ]; do
  case "$1" in
    --min) min="${2:?--min needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$min" in ''|*[!0-9]*) echo "--min must be a number" >&2; exit 2 ;; esac

pids=$(pgrep -x -d, -- "$name" || true)
count=0
if [ -n "$pids" ]; then
  count=$(( $(printf '%s' "$pids" | tr -cd ',' | wc -c) + 1 ))
  ps -o pid=,user=,etime=,pcpu=,pmem=,comm= -p "$pids"
fi
echo "process=${name} count=${count} min=${min}"
if [ "$count" -lt "$min" ]; then
  echo "WARNING: ${count} ${name} process(es) running, expected at least ${min}"
  exit 1
fi
