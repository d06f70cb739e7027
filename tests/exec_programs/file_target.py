"""A Singer target for the tests: appends each RECORD's record to FILE as a JSON line;
at each STATE it fsyncs FILE and then echoes the STATE's value on stdout.

Usage: file_target.py FILE. $TARGET_NO_ECHO=1: never echo (a target that cannot confirm).
A torn last line (left by a kill) is cut off at the start: it was never confirmed.
"""

import json
import os
import sys
from pathlib import Path

no_echo = os.environ.get("TARGET_NO_ECHO") == "1"
path = Path(sys.argv[1])
if path.exists():
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as torn:
            torn.truncate(data.rfind(b"\n") + 1)
with path.open("a") as out:
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "RECORD":
            out.write(json.dumps(message["record"]) + "\n")
        elif message["type"] == "STATE":
            out.flush()
            os.fsync(out.fileno())
            if not no_echo:
                print(json.dumps(message["value"]), flush=True)
