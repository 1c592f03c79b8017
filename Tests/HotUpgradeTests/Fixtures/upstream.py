"""A fast asyncio HTTP/1.1 keep-alive upstream for hot-upgrade tests.

Usage: upstream.py PORT_FILE. Binds a free port on 127.0.0.1 and writes it to PORT_FILE. Every request is
answered 200 with the body "ok <path>\n". Exits when its parent (the test process) is gone.
"""
import asyncio
import os
import sys


async def watch_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.2)
    os._exit(0)


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            body = b"ok " + path + b"\n"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    asyncio.ensure_future(watch_parent())
    await server.serve_forever()


asyncio.run(main())
