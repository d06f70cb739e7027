"""The seeded JSONL input of the throughput workloads, generated once and cached."""

from __future__ import annotations

import json
import random
from pathlib import Path

_USERS = 5_000
_SKUS = 800


def records_file(directory: Path, count: int, seed: int = 6) -> Path:
    """A file of `count` JSON order records, one a line; the same bytes for the same seed."""
    path = directory / f"orders-{count}-{seed}.jsonl"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    encode = json.JSONEncoder(separators=(",", ":")).encode
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        lines = []
        for index in range(count):
            record = {
                "id": index,
                "user": f"u{rng.randrange(_USERS):05d}",
                "ts": 1_763_900_000_000 + index * 7,
                "items": [
                    {"sku": f"s{rng.randrange(_SKUS):04d}", "qty": rng.randint(1, 5)}
                    for _ in range(rng.randint(1, 3))
                ],
                "amount": round(rng.uniform(1, 500), 2),
                "note": rng.choice(["", "gift", "express", "fragile; handle with care"]),
            }
            lines.append(encode(record))
            if len(lines) == 10_000:
                out.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            out.write("\n".join(lines) + "\n")
    partial.rename(path)
    return path
