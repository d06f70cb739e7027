"""A Singer tap for the tests: records {"n": i} for i below COUNT, a STATE every EVERY.

Usage: counter_tap.py COUNT [EVERY] [--state FILE]. Resumes after the state's "n";
$TAP_PAUSE seconds of sleep after each STATE (so a test can kill it mid-stream).
"""

import json
import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]
start = 0
if "--state" in args:
    at = args.index("--state")
    with Path(args[at + 1]).open() as file:
        start = json.load(file)["n"]
    del args[at : at + 2]
count = int(args[0])
every = int(args[1]) if len(args) > 1 else 10
pause = float(os.environ.get("TAP_PAUSE", "0"))
out = sys.stdout
for i in range(start, count):
    out.write(json.dumps({"type": "RECORD", "stream": "counter", "record": {"n": i}}) + "\n")
    if (i + 1) % every == 0 or i + 1 == count:
        out.write(json.dumps({"type": "STATE", "value": {"n": i + 1}}) + "\n")
        if pause:
            out.flush()
            time.sleep(pause)
out.flush()
print(f"counter_tap: {start} to {count}", file=sys.stderr)
