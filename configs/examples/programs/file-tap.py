#!/usr/bin/env python3
"""A Singer tap in Python: the lines of a local file, followed as it grows.

Usage: file-tap.py FILE [--state STATE_FILE]. The state is {"offset": bytes read}.
Each line becomes {"line": text}; a STATE follows every 100 lines and each pause.
"""

import json
import sys
import time
from pathlib import Path

args = sys.argv[1:]
offset = 0
if "--state" in args:
    at = args.index("--state")
    with Path(args[at + 1]).open() as state:
        offset = json.load(state)["offset"]
    del args[at : at + 2]
out = sys.stdout
with Path(args[0]).open("rb") as source:
    source.seek(offset)
    count = 0
    while True:
        line = source.readline()
        if not line.endswith(b"\n"):  # nothing more yet (or half a line): wait
            source.seek(offset)
            out.write(json.dumps({"type": "STATE", "value": {"offset": offset}}) + "\n")
            out.flush()
            time.sleep(1)
            continue
        offset += len(line)
        text = line.decode("utf-8", "replace").rstrip("\n")
        out.write(
            json.dumps({"type": "RECORD", "stream": "lines", "record": {"line": text}}) + "\n"
        )
        count += 1
        if count % 100 == 0:
            out.write(json.dumps({"type": "STATE", "value": {"offset": offset}}) + "\n")
