"""Raw-socket HTTP and TCP clients for Mesh tests; each mode prints one JSON line.

pipeline PORT: three requests in one write; the responses' statuses and bodies in order.
malformed PORT: a request line that is not HTTP; the status line and whether the proxy then closed.
slowloris PORT: a request head, one byte every 100 ms; seconds until the proxy closed the connection.
idle PORT: sends nothing; seconds until the proxy closed the connection.
tcp_echo PORT NBYTES: sends NBYTES, half-closes, reads until EOF; sha256 of both.
tcp_first PORT: reads until EOF (the upstream speaks first), then sends 1 MiB and half-closes; sha256 of both.
"""
import hashlib
import json
import socket
import sys
import time

mode, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=30)


def read_all():
    data = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def payload(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


if mode == "pipeline":
    s.sendall(
        b"GET /slow/300 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/5 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping"
    )
    data = read_all()
    responses = []
    rest = data
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        body, rest = rest[:n], rest[n:]
        responses.append({"status": int(lines[0].split()[1]), "body": body.decode("latin-1")})
    print(json.dumps(responses))
elif mode == "malformed":
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    data = read_all()
    print(json.dumps({"status_line": data.split(b"\r\n")[0].decode(), "closed": True}))
elif mode == "slowloris":
    start = time.monotonic()
    try:
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 1000:
            s.sendall(bytes([byte]))
            time.sleep(0.1)
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
    except (BrokenPipeError, ConnectionResetError):
        pass
    print(json.dumps({"closed_after": time.monotonic() - start}))
elif mode == "idle":
    start = time.monotonic()
    read_all()
    print(json.dumps({"closed_after": time.monotonic() - start}))
elif mode == "tcp_echo":
    data = payload(int(sys.argv[3]), b"client")
    import threading

    received = {}
    reader = threading.Thread(target=lambda: received.update(data=read_all()))
    reader.start()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    reader.join()
    print(json.dumps({
        "sent": hashlib.sha256(data).hexdigest(),
        "received": hashlib.sha256(received["data"]).hexdigest(),
        "received_bytes": len(received["data"]),
    }))
elif mode == "tcp_first":
    got = read_all()
    data = payload(1 << 20, b"client")
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(json.dumps({
        "received": hashlib.sha256(got).hexdigest(),
        "expected": hashlib.sha256(payload(1 << 20, b"upstream")).hexdigest(),
        "sent": hashlib.sha256(data).hexdigest(),
    }))
