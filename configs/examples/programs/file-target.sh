#!/bin/sh
# A Singer target in shell: each RECORD's record appended to the file $1. At each
# STATE it syncs the file to disk, then echoes the STATE line: the daemon checkpoints
# only after that echo.
while IFS= read -r line; do
  case $line in
    '{"type":"RECORD"'*)
      record=${line#*\"record\":}
      printf '%s\n' "${record%\}}" >> "$1" ;;
    '{"type":"STATE"'*)
      sync "$1"
      printf '%s\n' "$line" ;;
  esac
done
