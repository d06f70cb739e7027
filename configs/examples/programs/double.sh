#!/bin/sh
# An exec processor in shell: each record (one JSON line on stdin) answered with two
# copies of itself, then the empty line that ends a record's answer.
while IFS= read -r record; do
  printf '%s\n%s\n\n' "$record" "$record"
done
