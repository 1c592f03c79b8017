"""Keep-alive HTTP/1.1 clients that send requests without pause, for hot-upgrade tests.

Usage: http_clients.py PORT CLIENTS STOP_FILE PROGRESS_FILE [CHURN]. Opens CLIENTS connections (each once: a
client never reconnects, so a moved connection keeps its local port and a dropped one shows up as a failure),
then each sends GET, reads the whole response, checks it, and sends the next, until STOP_FILE exists. CHURN
more clients open a new connection for every request (so a moment without a listener shows up as refused).
Writes "total min_per_client errors" to PROGRESS_FILE every 50 ms, and at the end prints one JSON line:
requests, churn requests, failures, resets, refused, whether every local port stayed the same, the first error.
"""
import asyncio
import json
import os
import sys

port, clients, stop_file, progress_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
churn = int(sys.argv[5]) if len(sys.argv) > 5 else 0
churned = [0]
counts = [0] * clients
result = {"failures": 0, "resets": 0, "refused": 0, "first_error": None}
ports_start = [None] * clients
ports_end = [None] * clients
stop = False


def record(kind, error):
    result[kind] += 1
    if result["first_error"] is None:
        result["first_error"] = repr(error)


async def client(index):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError as error:
        record("refused", error)
        return
    except OSError as error:
        record("failures", error)
        return
    ports_start[index] = writer.get_extra_info("sockname")[1]
    try:
        while not stop:
            path = b"/c%d/%d" % (index, counts[index])
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("unexpected response: %r" % head[:80])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            if body != b"ok " + path + b"\n":
                raise RuntimeError("wrong body %r for %r" % (body, path))
            counts[index] += 1
        ports_end[index] = writer.get_extra_info("sockname")[1]
    except ConnectionResetError as error:
        record("resets", error)
    except Exception as error:
        record("failures", error)
    finally:
        writer.close()


async def churner(index):
    while not stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError as error:
            record("refused", error)
            await asyncio.sleep(0.01)
            continue
        except OSError as error:
            record("failures", error)
            await asyncio.sleep(0.01)
            continue
        try:
            path = b"/churn%d/%d" % (index, churned[0])
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            if not response.startswith(b"HTTP/1.1 200") or not response.endswith(b"ok " + path + b"\n"):
                raise RuntimeError("unexpected response: %r" % response[:80])
            churned[0] += 1
        except ConnectionResetError as error:
            record("resets", error)
        except Exception as error:
            record("failures", error)
        finally:
            writer.close()


async def progress():
    global stop
    while True:
        with open(progress_file + ".tmp", "w") as f:
            f.write("%d %d %d" % (sum(counts), min(counts), result["failures"] + result["resets"] + result["refused"]))
        os.rename(progress_file + ".tmp", progress_file)
        if os.path.exists(stop_file):
            stop = True
            return
        await asyncio.sleep(0.05)


async def main():
    watcher = asyncio.ensure_future(progress())
    await asyncio.gather(*(client(i) for i in range(clients)), *(churner(i) for i in range(churn)))
    await watcher
    result["requests"] = sum(counts)
    result["churn_requests"] = churned[0]
    result["min_per_client"] = min(counts)
    result["ports_unchanged"] = all(s is not None and s == e for s, e in zip(ports_start, ports_end))
    print(json.dumps(result))


asyncio.run(main())
