#!/usr/bin/env python3
"""An exec processor in Python: each record on stdin answered with zero or more result
lines, then an empty line. A line starting with "!" fails that record (the job's
[records] policy decides what happens to it)."""

import json
import sys

for line in sys.stdin:
    record = json.loads(line)
    if not isinstance(record, dict):
        print("!expected a JSON object")
    elif record.get("n", 0) % 7 != 0:  # drop multiples of 7: answer nothing
        print(json.dumps({**record, "square": record.get("n", 0) ** 2}))
    print(flush=True)  # the end of this record's answer
