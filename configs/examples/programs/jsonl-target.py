#!/usr/bin/env python3
"""A Singer target in Python: each RECORD's record appended to FILE as a JSON line.

Usage: jsonl-target.py FILE. At each STATE it fsyncs FILE, then echoes the state's
value on stdout: that echo is what the daemon waits for before it checkpoints.
"""

import json
import os
import sys
from pathlib import Path

with Path(sys.argv[1]).open("a") as out:
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "RECORD":
            out.write(json.dumps(message["record"]) + "\n")
        elif message["type"] == "STATE":
            out.flush()
            os.fsync(out.fileno())
            print(json.dumps(message["value"]), flush=True)
