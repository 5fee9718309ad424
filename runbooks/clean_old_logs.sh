#!/usr/bin/env bash
# Delete rotated logs older than N days under an allowlisted directory.
# argv: DIR [DAYS] [--mode dry-run|delete]
# Only names like *.log.N, *.log.gz, *.log.YYYY-MM-DD are touched; the live *.log file never is.
set -euo pipefail

dir_key="${1:?usage: clean_old_logs DIR [DAYS] [--mode dry-run|delete]}"
days="${2:-30}"
mode=dry-run
shift
[ "$#" -gt 0 ] && shift
while [ "$#" -gt 0 ]; do
  case "$1" in
    --mode) mode="${2:?--mode needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$dir_key" in
  app) base=/var/log/app ;;
  was) base=/app/was/logs ;;
  web) base=/var/log/nginx ;;
  *) echo "directory is not on this runbook's allowlist" >&2; exit 2 ;;
esac
case "$days" in ''|*[!0-9]*) echo "days must be a number" >&2; exit 2 ;; esac
[ "$days" -ge 7 ] || { echo "refusing to clean logs younger than 7 days" >&2; exit 2; }
case "$mode" in dry-run|delete) ;; *) echo "mode must be dry-run or delete" >&2; exit 2 ;; esac
[ -d "$base" ] || { echo "log directory does not exist on this host" >&2; exit 2; }

count=0
bytes=0
while IFS= read -r -d '' f; do
  size=$(stat -c %s -- "$f")
  count=$((count + 1))
  bytes=$((bytes + size))
  if [ "$mode" = delete ]; then
    rm -f -- "$f"
    echo "deleted ${f} (${size} bytes)"
  else
    echo "would delete ${f} (${size} bytes)"
  fi
done < <(find "$base" -xdev -type f \( -name '*.log.[0-9]*' -o -name '*.log.gz' -o -name '*.gz' \) \
           -mtime +"$days" -print0)
echo "mode=${mode} files=${count} bytes=${bytes} older_than_days=${days}"
