#!/usr/bin/env bash
# No pipefail here: yes ends by SIGPIPE when head has enough.
set -eu
echo "FIRST LINE"
yes 'db at 10.100.0.7 password=hunter22 rrn 901010-1234567 ok' | head -c "$1"
echo
echo "LAST LINE"
