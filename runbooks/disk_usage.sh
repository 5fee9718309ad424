#!/usr/bin/env bash
# Disk usage of one mount point. argv: MOUNT [--warn PERCENT]
set -euo pipefail

mount="${1:?usage: disk_usage MOUNT [--warn PERCENT]}"
warn=85
shift
while [ "$#" -gt 0 ]; do
  case "$1" in
    --warn) warn="${2:?--warn needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$mount" in /*) ;; *) echo "mount must be an absolute path" >&2; exit 2 ;; esac
case "$warn" in ''|*[!0-9]*) echo "--warn must be a number" >&2; exit 2 ;; esac
if [ ! -e "$mount" ]; then
  echo "no such path: $mount" >&2
  exit 2
fi

df -hP -- "$mount"
used=$(df -P -- "$mount" | awk 'NR==2 { sub("%", "", $5); print $5 }')
echo "use=${used}% warn=${warn}%"
if [ "$used" -ge "$warn" ]; then
  echo "WARNING: ${mount} is ${used}% full (threshold ${warn}%)"
  exit 1
fi
