"""Steady keep-alive HTTP/1.1 load over long-lived connections, for scripts/bench-upgrade.

Usage: upgrade_load.py PORT CONNECTIONS INTERVAL_S DURATION_S RELOADS_FILE
Each connection sends one GET every INTERVAL_S (spread evenly), reads the whole response, and records the
latency. A connection the server closes between requests is reopened and counted as not surviving; a
request that fails is counted (resets apart), and the connection is reopened; a refused connect is counted
and retried. At the end it reads RELOADS_FILE (one wall-clock start time per line, written by the driver)
and prints one JSON line: requests, failed, resets, refused, reconnects, connections that survived each
reload (the fewest over all reloads), p50/p99 over the run and p99 within 1 s after each reload start.
"""
import asyncio
import json
import sys
import time

port, connections, interval, duration, reloads_file = (
    int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
stats = {"requests": 0, "failed": 0, "resets": 0, "refused": 0, "reconnects": 0}
latencies = []  # (start time, seconds)
reconnect_times = []  # (time, connection index)
REQUEST = b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n"


async def connect():
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            stats["refused"] += 1
            await asyncio.sleep(0.01)


async def one(index, end):
    await asyncio.sleep(interval * index / connections)
    reader, writer = await connect()
    while time.time() < end:
        started = time.time()
        try:
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            # Closed before any byte of the response: idle keep-alive closed by the server (a drain), unless
            # the request had been sent and lost, which the server cannot tell us; count it as a failure
            # only when some bytes had arrived.
            if error.partial:
                stats["failed"] += 1
            stats["reconnects"] += 1
            reconnect_times.append((time.time(), index))
            writer.close()
            reader, writer = await connect()
            continue
        except ConnectionResetError:
            stats["resets"] += 1
            stats["reconnects"] += 1
            reconnect_times.append((time.time(), index))
            reader, writer = await connect()
            continue
        except Exception:
            stats["failed"] += 1
            stats["reconnects"] += 1
            reconnect_times.append((time.time(), index))
            reader, writer = await connect()
            continue
        try:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                stats["failed"] += 1
            else:
                stats["requests"] += 1
                latencies.append((started, time.time() - started))
        except Exception:
            stats["failed"] += 1
            stats["reconnects"] += 1
            reconnect_times.append((time.time(), index))
            reader, writer = await connect()
            continue
        if b"connection: close" in head.lower():
            stats["reconnects"] += 1
            reconnect_times.append((time.time(), index))
            writer.close()
            reader, writer = await connect()
        await asyncio.sleep(max(0, interval - (time.time() - started)))
    writer.close()


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def main():
    end = time.time() + duration
    await asyncio.gather(*(one(i, end) for i in range(connections)))
    reloads = [float(line) for line in open(reloads_file).read().split()]
    during = [l for s, l in latencies if any(r <= s < r + 1.0 for r in reloads)]
    survived = []
    for i, start in enumerate(reloads):
        stop = reloads[i + 1] if i + 1 < len(reloads) else float("inf")
        moved = {index for t, index in reconnect_times if start <= t < stop}
        survived.append(connections - len(moved))
    stats.update({
        "p50_ms": round(percentile([l for _, l in latencies], 0.50) * 1000, 2),
        "p99_ms": round(percentile([l for _, l in latencies], 0.99) * 1000, 2),
        "p99_reload_ms": round(percentile(during, 0.99) * 1000, 2),
        "survived_min": min(survived) if survived else connections,
        "reloads": len(reloads),
    })
    print(json.dumps(stats))


asyncio.run(main())
