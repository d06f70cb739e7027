#!/bin/sh
# A plain-protocol program: one line of text a second, no position.
while true; do
  date -u +%Y-%m-%dT%H:%M:%SZ
  sleep 1
done
