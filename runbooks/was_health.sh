#!/usr/bin/env bash
# WAS health via the local actuator. argv: [PORT] [--endpoint health|liveness|readiness]
# Exit 0 when the status is UP, 1 when it is not, 2 on bad usage or a missing curl.
set -euo pipefail

port="${1:-8080}"
endpoint=health
[ "$#" -gt 0 ] && shift
while [ "$#" -gt 0 ]; do
  case "$1" in
    --endpoint) endpoint="${2:?--endpoint needs a value}"; shift 2 ;;
    *) echo "unexpected argument" >&2; exit 2 ;;
  esac
done
case "$port" in ''|*[!0-9]*) echo "port must be a number" >&2; exit 2 ;; esac
case "$endpoint" in
  health) path=/actuator/health ;;
  liveness) path=/actuator/health/liveness ;;
  readiness) path=/actuator/health/readiness ;;
  *) echo "unknown endpoint" >&2; exit 2 ;;
esac
command -v curl >/dev/null 2>&1 || { echo "curl is not installed on this host" >&2; exit 2; }

set +e
body=$(curl -sS --max-time 5 -o - -w '\nhttp_code=%{http_code}' "http://127.0.0.1:${port}${path}" 2>&1)
rc=$?
set -e
printf '%s\n' "$body"
if [ "$rc" -ne 0 ]; then
  echo "DOWN: the WAS did not answer on port ${port} (curl exit ${rc})"
  exit 1
fi
case "$body" in
  *'"status":"UP"'*|*'"status" : "UP"'*) echo "UP"; exit 0 ;;
  *) echo "NOT UP"; exit 1 ;;
esac
