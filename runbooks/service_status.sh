#!/usr/bin/env bash
# Status of one service. argv: SERVICE
# Exit 0 when active/running, 3 when inactive (as systemctl does), 2 on bad usage.
set -euo pipefail

service="${1:?usage: service_status SERVICE}"
[ "$#" -eq 1 ] || { echo "expected exactly one argument" >&2; exit 2; }
case "$service" in
  -*|*[!A-Za-z0-9@._-]*) echo "invalid service name" >&2; exit 2 ;;
esac

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  state=$(systemctl is-active -- "$service.service" 2>/dev/null || true)
  systemctl status --no-pager --lines=10 -- "$service.service" 2>&1 || true
  echo "state=${state:-unknown}"
  [ "$state" = "active" ] || exit 3
else
  echo "systemd is not running here; looking for processes named ${service}"
  if pgrep -x -- "$service" >/dev/null; then
    ps -o pid=,etime=,args= -p "$(pgrep -d, -x -- "$service")"
    echo "state=running"
  else
    echo "state=not-running"
    exit 3
  fi
fi
