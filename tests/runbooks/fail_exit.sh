#!/usr/bin/env bash
echo "to stdout: connecting to 10.1.2.3 with password=hunter22"
echo "to stderr: about to exit $1" >&2
exit "$1"
