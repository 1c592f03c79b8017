"""A long TCP stream both ways with running checksums, for hot-upgrade tests.

upstream mode: tcp_stream.py upstream PORT_FILE RESULT_FILE. Accepts connections (counting them), checks that
what arrives is the client pattern, sends the upstream pattern until the client's EOF, then writes a JSON
result (connections, bytes and sha256 each way, mismatch) to RESULT_FILE.
client mode: tcp_stream.py client PORT STOP_FILE PROGRESS_FILE. Sends the client pattern at a steady pace and
checks what arrives against the upstream pattern, until STOP_FILE exists; then half-closes, reads to EOF and
prints its JSON result. PROGRESS_FILE gets "sent received" every 50 ms.
"""
import asyncio
import hashlib
import json
import os
import sys

BLOCK = 65521


def pattern(seed):
    return bytes(((i * 131 + seed) ^ (i >> 7)) & 0xFF for i in range(BLOCK)) * 2


CLIENT, UPSTREAM = pattern(17), pattern(91)


class Checker:
    def __init__(self, expected):
        self.expected, self.offset, self.mismatch = expected, 0, False
        self.sha = hashlib.sha256()

    def feed(self, data):
        self.sha.update(data)
        while data:
            start = self.offset % BLOCK
            take = min(len(data), BLOCK)
            if data[:take] != self.expected[start:start + take]:
                self.mismatch = True
            data = data[take:]
            self.offset += take


async def watch_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.2)
    os._exit(0)


async def upstream(port_file, result_file):
    state = {"connections": 0}

    async def handle(reader, writer):
        state["connections"] += 1
        checker, sent, sha_sent, done = Checker(CLIENT), 0, hashlib.sha256(), False

        async def send():
            nonlocal sent
            while not done:
                chunk = UPSTREAM[sent % BLOCK:sent % BLOCK + 4096]
                writer.write(chunk)
                sha_sent.update(chunk)
                sent += len(chunk)
                await writer.drain()
                await asyncio.sleep(0.002)

        sender = asyncio.ensure_future(send())
        while True:
            data = await reader.read(65536)
            if not data:
                break
            checker.feed(data)
        done = True
        await sender
        writer.write_eof()
        await writer.drain()
        with open(result_file + ".tmp", "w") as f:
            json.dump({"connections": state["connections"], "received": checker.offset, "sha_received": checker.sha.hexdigest(),
                       "sent": sent, "sha_sent": sha_sent.hexdigest(), "mismatch": checker.mismatch}, f)
        os.rename(result_file + ".tmp", result_file)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    asyncio.ensure_future(watch_parent())
    await server.serve_forever()


async def client(port, stop_file, progress_file):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    checker, sent, sha_sent = Checker(UPSTREAM), 0, hashlib.sha256()
    error = None

    async def receive():
        nonlocal error
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                checker.feed(data)
        except Exception as e:
            error = repr(e)

    receiver = asyncio.ensure_future(receive())
    try:
        while not os.path.exists(stop_file):
            chunk = CLIENT[sent % BLOCK:sent % BLOCK + 3000]
            writer.write(chunk)
            sha_sent.update(chunk)
            sent += len(chunk)
            await writer.drain()
            with open(progress_file + ".tmp", "w") as f:
                f.write("%d %d" % (sent, checker.offset))
            os.rename(progress_file + ".tmp", progress_file)
            await asyncio.sleep(0.002)
        writer.write_eof()
    except Exception as e:
        error = repr(e)
    await receiver
    print(json.dumps({"sent": sent, "sha_sent": sha_sent.hexdigest(), "received": checker.offset,
                      "sha_received": checker.sha.hexdigest(), "mismatch": checker.mismatch, "error": error}))


if sys.argv[1] == "upstream":
    asyncio.run(upstream(sys.argv[2], sys.argv[3]))
else:
    asyncio.run(client(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
