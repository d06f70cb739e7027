#!/bin/sh
# A Singer tap in shell: records {"n": i} from the state's n (or 0) to $1, a STATE
# every 5. The state file comes in $TAP_STATE (state_env = "TAP_STATE").
n=0
if [ -n "$TAP_STATE" ]; then
  n=$(sed 's/[^0-9]//g' "$TAP_STATE")
fi
while [ "$n" -lt "$1" ]; do
  echo "{\"type\":\"RECORD\",\"stream\":\"counter\",\"record\":{\"n\":$n}}"
  n=$((n + 1))
  if [ $((n % 5)) -eq 0 ]; then echo "{\"type\":\"STATE\",\"value\":{\"n\":$n}}"; fi
done
echo "{\"type\":\"STATE\",\"value\":{\"n\":$n}}"
echo "counter.sh: done at $n" >&2
