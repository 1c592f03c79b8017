"""A TCP upstream for Mesh tunnel tests. Usage: tcp_upstream.py PORT_FILE MODE [RESULT_DIR].

echo: sends back every byte; on EOF from the peer, shuts down its write half after the last byte.
first: sends 1 MiB, shuts down its write half, reads until EOF, writes the sha256 of what it read to
RESULT_DIR/<n>.sha (n counts connections), then closes.
"""
import hashlib
import os
import socket
import sys
import time
import threading


def exit_with_parent():
    """Exits when the test process that started this fixture is gone, so no fixture outlives its test."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


exit_with_parent()

mode = sys.argv[2]
result_dir = sys.argv[3] if len(sys.argv) > 3 else None
counter = [0]


def payload(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def serve(conn, index):
    with conn:
        if mode == "echo":
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)
        else:
            conn.sendall(payload(1 << 20, b"upstream"))
            conn.shutdown(socket.SHUT_WR)
            digest = hashlib.sha256()
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                digest.update(data)
            path = os.path.join(result_dir, "%d.sha" % index)
            with open(path + ".tmp", "w") as f:
                f.write(digest.hexdigest())
            os.rename(path + ".tmp", path)


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(listener.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    conn, _ = listener.accept()
    counter[0] += 1
    threading.Thread(target=serve, args=(conn, counter[0]), daemon=True).start()
