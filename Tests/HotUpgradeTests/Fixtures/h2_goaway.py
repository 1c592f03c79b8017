"""An HTTP/2 (h2c prior knowledge) client at the frame level, for the hot-upgrade drain of HTTP/2.

Usage: h2_goaway.py PORT READY_FILE. Opens a connection, sends GET / on stream 1 and waits for its response
to end, writes READY_FILE, then waits (at most 30 s) for a GOAWAY frame while sending a GET on a new stream
every 50 ms, and reads each response to its end. Prints one JSON line: the responses completed before and
after the GOAWAY, whether one came and its error code, and whether the connection then closed.
"""
import json
import socket
import struct
import sys
import time

port, ready_file = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port))
sock.settimeout(30)


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# HPACK, static table only: :method GET (2), :scheme http (6), :path / (4), :authority literal without indexing.
HEADERS = bytes([0x82, 0x86, 0x84, 0x01, 0x04]) + b"test"
sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
buffer = b""


def read_frame():
    global buffer
    while len(buffer) < 9:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    length = int.from_bytes(buffer[:3], "big")
    while len(buffer) < 9 + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    kind, flags, stream = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
    payload = buffer[9:9 + length]
    buffer = buffer[9 + length:]
    if kind == 4 and not flags & 1:
        sock.sendall(frame(4, 1, 0))  # acknowledge SETTINGS
    return kind, flags, stream, payload


result = {"before": 0, "after": 0, "goaway": False, "error_code": None, "closed": False}
next_stream = 1
open_streams = set()


def request():
    global next_stream
    sock.sendall(frame(1, 0x5, next_stream, HEADERS))  # END_STREAM | END_HEADERS
    open_streams.add(next_stream)
    next_stream += 2


request()
deadline = time.time() + 30
last_request = time.time()
while time.time() < deadline:
    if not result["goaway"] and result["before"] >= 1 and time.time() - last_request > 0.05 and not open_streams:
        request()
        last_request = time.time()
    sock.settimeout(0.05)
    try:
        got = read_frame()
    except socket.timeout:
        continue
    if got is None:
        result["closed"] = True
        break
    kind, flags, stream, payload = got
    if kind in (0, 1) and flags & 1 and stream in open_streams:  # DATA or HEADERS with END_STREAM
        open_streams.discard(stream)
        result["after" if result["goaway"] else "before"] += 1
        if result["before"] == 1 and not result["goaway"]:
            open(ready_file, "w").close()
    elif kind == 3:  # RST_STREAM
        open_streams.discard(stream)
        result["reset"] = result.get("reset", 0) + 1
    elif kind == 7:  # GOAWAY
        result["goaway"] = True
        result["error_code"] = int.from_bytes(payload[4:8], "big")
        result["open_at_goaway"] = len(open_streams)
    if result["goaway"] and not open_streams:
        # Done with this connection, as a client that saw GOAWAY would be.
        break
print(json.dumps(result))
