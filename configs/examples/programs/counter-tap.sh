#!/bin/sh
# A Singer tap in shell: records {"n": N} up to $1, a STATE {"n": next} after every 100.
# The last committed state comes as a file named by $TAP_STATE (state_env = "TAP_STATE").
n=0
if [ -n "$TAP_STATE" ]; then
  n=$(sed 's/[^0-9]//g' "$TAP_STATE")
fi
while [ "$n" -lt "$1" ]; do
  echo "{\"type\":\"RECORD\",\"stream\":\"counter\",\"record\":{\"n\":$n}}"
  n=$((n + 1))
  if [ $((n % 100)) -eq 0 ]; then echo "{\"type\":\"STATE\",\"value\":{\"n\":$n}}"; fi
done
echo "{\"type\":\"STATE\",\"value\":{\"n\":$n}}"
echo "counter-tap: done at $n" >&2   # stderr goes to the daemon's log
