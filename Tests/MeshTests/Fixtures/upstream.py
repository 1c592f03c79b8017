"""A small HTTP/1.1 keep-alive upstream for Mesh tests.

Usage: upstream.py PORT_FILE [NAME] [PORT]. Binds 127.0.0.1 on PORT (default: a free one) and writes the
port to PORT_FILE.
Paths: /echo (body back, with request headers as x-echo-*), /bytes/N (N bytes, content-length),
/chunked/N (N bytes in chunks), /slow/MS (answers after MS ms), /die (sends half a response, then
closes), /health, anything else: 200 with the server name.
"""
import hashlib
import http.server
import os
import socketserver
import sys
import threading
import time


def exit_with_parent():
    """Exits when the test process that started this fixture is gone, so no fixture outlives its test."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


exit_with_parent()

NAME = sys.argv[2] if len(sys.argv) > 2 else "upstream"


def pattern(n):
    block = bytes(range(256)) * 4096
    out = bytearray()
    while len(out) < n:
        out += block[: n - len(out)]
    return bytes(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length", "0"))
        return self.rfile.read(length) if length else b""

    def send(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", NAME)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.read_body()
        path = self.path
        if path.startswith("/echo"):
            extra = [("x-echo-" + k.lower(), v) for k, v in self.headers.items()]
            extra.append(("x-body-sha256", hashlib.sha256(body).hexdigest()))
            extra.append(("x-peer-port", str(self.client_address[1])))
            self.send(200, body, extra)
        elif path.startswith("/bytes/"):
            self.send(200, pattern(int(path.split("/")[2])))
        elif path.startswith("/chunked/"):
            data = pattern(int(path.split("/")[2]))
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 65536):
                part = data[i : i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
            self.send(200, b"slow\n")
        elif path.startswith("/die"):
            self.send_response(200)
            self.send_header("content-length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.send(200, (NAME + "\n").encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops connections when a test opens dozens at once (h2load's
    # streams become as many upstream connections), and the dropped ones wait out a SYN retry.
    request_queue_size = 256


server = Server(("127.0.0.1", int(sys.argv[3]) if len(sys.argv) > 3 else 0), Handler)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, sys.argv[1])
server.serve_forever()
