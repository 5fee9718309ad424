#!/usr/bin/env bash
# Restart one allowlisted service and wait until it is active again. argv: SERVICE
set -euo pipefail

readonly ALLOWED="tomcat9 nginx httpd jeus webtob"
service="${1:?usage: service_restart SERVICE}"
[ "$#" -eq 1 ] || { echo "expected exactly one argument" >&2; exit 2; }
case " $ALLOWED " in
  *" $service "*) ;;
  *) echo "service is not on this runbook's allowlist" >&2; exit 2 ;;
esac
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
  echo "systemd is not running on this host; refusing to guess how to restart ${service}" >&2
  exit 2
fi

echo "restarting ${service} at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
systemctl restart -- "$service.service"
for _ in $(seq 1 30); do
  if systemctl is-active --quiet -- "$service.service"; then
    echo "${service} is active again"
    systemctl status --no-pager --lines=5 -- "$service.service" || true
    exit 0
  fi
  sleep 1
done
echo "${service} did not become active within 30 s" >&2
systemctl status --no-pager --lines=20 -- "$service.service" >&2 || true
exit 1
