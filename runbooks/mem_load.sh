#!/usr/bin/env bash
# Memory, swap and load summary. argv: [--top N]
set -euo pipefail

top=5
while [ "$#" -gt 0 ]; do
  case "$1" in
    --top) top="${2:?--top needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$top" in ''|*[!0-9]*) echo "--top must be a number" >&2; exit 2 ;; esac

echo "== uptime and load"
uptime
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
echo "== memory (MiB)"
free -m
echo "== top ${top} by memory"
ps -eo pid=,user=,pmem=,rss=,comm= --sort=-rss | head -n "$top"
