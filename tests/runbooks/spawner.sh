#!/usr/bin/env bash
# Test: leaves a process named "<marker>-<mode>" behind in one of the ways a careless runbook does.
set -eu
mode="$1"
name="$2-$1"
case "$mode" in
  setsid) setsid bash -c 'exec -a "$0" sleep 1000' "$name" & ;;
  double_fork) ( ( exec -a "$name" sleep 1000 ) & ) ;;
  daemon) setsid -f bash -c 'exec -a "$0" sleep 1000' "$name" </dev/null >/dev/null 2>&1 ;;
  nohup) nohup bash -c 'exec -a "$0" sleep 1000' "$name" </dev/null >/dev/null 2>&1 & ;;
  background) ( exec -a "$name" sleep 1000 ) & ;;
  forker) setsid bash -c 'while :; do (exec -a "$0" sleep 1000) & sleep 0.01; done' "$name" </dev/null >/dev/null 2>&1 & ;;
  timeout)
    setsid bash -c 'trap "" TERM; exec -a "$0" sleep 1000' "$name" </dev/null >/dev/null 2>&1 &
    echo "started $name"
    trap '' TERM
    exec -a "$name" sleep 1000 ;;
esac
echo "started $name"
