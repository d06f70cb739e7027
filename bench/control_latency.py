"""Round-trip time of a `status` request on the control socket, quiet and under hostile clients.

Usage: python bench/control_latency.py SOCKET [--requests N]
against a running daemon (`supervisor run -c ...`). Opens 50 stalled,
10 garbage and 5 oversized connections for the second measurement.
"""

from __future__ import annotations

import argparse
import socket
import time


def round_trip_ms(path: str) -> float:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    started = time.perf_counter()
    client.sendall(b'{"v":1,"verb":"status"}\n')
    # The whole reply: with thousands of jobs it is megabytes, many reads.
    while chunk := client.recv(1 << 20):
        if chunk.endswith(b"\n"):
            break
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed * 1000


def round_trips_ms(path: str, requests: int) -> list[float]:
    """`requests` status round trips, one after another, in milliseconds."""
    return [round_trip_ms(path) for _ in range(requests)]


def percentiles(path: str, requests: int) -> str:
    times = sorted(round_trips_ms(path, requests))
    return f"p50 {times[requests // 2]:.2f} ms, p99 {times[int(requests * 0.99)]:.2f} ms"


def hostile_clients(path: str) -> list[socket.socket]:
    clients = []
    for payload in [b""] * 50 + [b"\xff garbage\n"] * 10 + [b"x" * 70_000] * 5:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        if payload:
            client.sendall(payload)
        clients.append(client)
    return clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"quiet:   {percentiles(args.socket, args.requests)}")
    clients = hostile_clients(args.socket)
    try:
        hostile = percentiles(args.socket, args.requests)
        print(f"hostile: {hostile} (50 stalled, 10 garbage, 5 oversized)")
    finally:
        for client in clients:
            client.close()


if __name__ == "__main__":
    main()
