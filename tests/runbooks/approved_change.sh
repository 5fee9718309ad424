#!/usr/bin/env bash
echo "changed: $1"
