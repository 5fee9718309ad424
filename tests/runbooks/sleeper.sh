#!/usr/bin/env bash
marker="$1"
echo "started $marker"
( exec -a "$marker-child" sleep 300 ) &
( ( exec -a "$marker-grandchild" sleep 300 ) & wait ) &
trap '' TERM
exec -a "$marker-main" sleep 300
