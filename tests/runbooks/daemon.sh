#!/usr/bin/env bash
# Test: starts a daemon on purpose (its manifest says leaves_daemon = true).
setsid -f bash -c 'exec -a "$0" sleep 1000' "$1-daemon" </dev/null >/dev/null 2>&1
echo "started $1-daemon"
