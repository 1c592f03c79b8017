"""redis-py (Debian's python3-redis) against a Divan RESP server: every string and key command
through the library's own API, Redis's error forms, a pipeline of 10,000 commands, and malformed
streams that close only their own connection. Prints "ok" when every check held.

Usage: redis_py_check.py PORT
"""
import socket
import sys
import time

import redis

port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)


def expect(actual, wanted, what):
    if actual != wanted:
        raise AssertionError(f"{what}: got {actual!r}, wanted {wanted!r}")


def raw(*args):
    """A command's reply without redis-py's per-command parsing (which turns SET's reply into a bool)."""
    connection = r.connection_pool.get_connection(args[0])
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        r.connection_pool.release(connection)


def expect_error(message, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except redis.ResponseError as error:
        expect(str(error), message, f"error of {call.__name__}{args}")
        return
    raise AssertionError(f"{call.__name__}{args} did not fail")


# Connection and server.
expect(r.ping(), True, "PING")
expect(r.echo("hi"), b"hi", "ECHO")
expect(r.client_setname("py"), True, "CLIENT SETNAME")
expect(r.client_getname(), "py", "CLIENT GETNAME")
expect(isinstance(r.client_id(), int), True, "CLIENT ID")
expect(r.client_info()["name"], "py", "CLIENT INFO")
expect(r.config_get("databases"), {"databases": "1"}, "CONFIG GET")
expect(r.info()["role"], "master", "INFO role")
expect(r.info("divan")["regions"], 1, "INFO divan")
seconds, micros = r.time()
expect(abs(seconds - time.time()) < 60, True, "TIME")
expect(r.execute_command("COMMAND COUNT") > 40, True, "COMMAND COUNT")
expect_error("unknown command 'NOPE', with args beginning with: 'x' ", r.execute_command, "NOPE", "x")
expect_error("wrong number of arguments for 'get' command", r.execute_command, "GET")
expect_error("DB index is out of range", r.execute_command, "SELECT", 1)

# SET and its options.
expect(r.set("k", "v"), True, "SET")
expect(r.get("k"), b"v", "GET")
expect(r.set("k", "w", nx=True), None, "SET NX on an existing key")
expect(r.set("absent", "w", xx=True), None, "SET XX on a missing key")
expect(r.set("k", "w", xx=True, get=True), b"v", "SET XX GET")
expect(r.set("k", "v", ex=100), True, "SET EX")
expect(r.ttl("k"), 100, "TTL")
expect(r.set("k", "v2", keepttl=True), True, "SET KEEPTTL")
expect(95_000 < r.pttl("k") <= 100_000, True, "PTTL after KEEPTTL")
expect(r.set("k", "v", px=5000), True, "SET PX")
expect(4_000 < r.pttl("k") <= 5_000, True, "PTTL after PX")
expect(r.set("k", "v", exat=int(time.time()) + 50), True, "SET EXAT")
expect(45 <= r.ttl("k") <= 50, True, "TTL after EXAT")
expect(r.set("k", "v", pxat=int(time.time() * 1000) + 50_000), True, "SET PXAT")
expect(45 <= r.ttl("k") <= 50, True, "TTL after PXAT")
expect(r.set("k", "v"), True, "SET clears the expiry")
expect(r.ttl("k"), -1, "TTL without expiry")
expect_error("invalid expire time in 'set' command", r.set, "k", "v", ex=0)
expect_error("syntax error", r.execute_command, "SET", "k", "v", "NX", "XX")
expect(r.execute_command("SET", "k", "v2", "IFEQ", "nope"), None, "SET IFEQ mismatch")
expect(r.execute_command("SET", "k", "v2", "IFEQ", "v"), True, "SET IFEQ match")
expect(r.execute_command("SET", "k", "v3", "IFNE", "v2"), None, "SET IFNE equal")
expect(raw("SET", "k", "v3", "IFNE", "x", "GET"), b"v2", "SET IFNE GET")
expect(r.execute_command("DELEX", "k", "IFEQ", "v2"), 0, "DELEX IFEQ mismatch")
expect(r.execute_command("DELEX", "k", "IFEQ", "v3"), 1, "DELEX IFEQ match")
expect(r.setnx("k", "a"), True, "SETNX")
expect(r.setnx("k", "b"), False, "SETNX existing")
expect(r.getset("k", "c"), b"a", "GETSET")
expect(r.getdel("k"), b"c", "GETDEL")
expect(r.getdel("k"), None, "GETDEL missing")

# Several keys.
expect(r.mset({"a": 1, "b": 2}), True, "MSET")
expect(r.mget("a", "missing", "b"), [b"1", None, b"2"], "MGET")
expect(r.msetnx({"b": 3, "c": 3}), False, "MSETNX with an existing key")
expect(r.msetnx({"c": 3, "d": 4}), True, "MSETNX")
expect(r.exists("a", "a", "missing"), 2, "EXISTS")
expect(r.delete("a", "missing"), 1, "DEL")
expect(r.unlink("b"), 1, "UNLINK")

# Numbers, strings, expiry.
expect(r.incr("n"), 1, "INCR")
expect(r.incrby("n", 9), 10, "INCRBY")
expect(r.decr("n"), 9, "DECR")
expect(r.decrby("n", 10), -1, "DECRBY")
r.set("text", "abc")
expect_error("value is not an integer or out of range", r.incr, "text")
r.set("big", str(2**63 - 1))
expect_error("increment or decrement would overflow", r.incr, "big")
expect(r.append("s", "Hello"), 5, "APPEND")
expect(r.append("s", " World"), 11, "APPEND again")
expect(r.strlen("s"), 11, "STRLEN")
expect(r.getrange("s", -5, -1), b"World", "GETRANGE")
expect(r.type("s"), b"string", "TYPE")
expect(r.type("missing"), b"none", "TYPE missing")
expect(r.expire("s", 100), True, "EXPIRE")
expect(r.pexpire("s", 100_000), True, "PEXPIRE")
expect(r.persist("s"), True, "PERSIST")
expect(r.ttl("s"), -1, "TTL after PERSIST")
expect(r.pexpire("s", 1), True, "PEXPIRE 1 ms")
deadline = time.time() + 5
while r.exists("s") and time.time() < deadline:
    time.sleep(0.005)
expect(r.get("s"), None, "an expired key is invisible")
expect(r.ttl("s"), -2, "TTL of an expired key")

# Locks and sequences.
token = r.execute_command("DIVAN.LOCK", "job", 10_000)
expect(isinstance(token, int) and token > 0, True, "DIVAN.LOCK")
expect(r.execute_command("DIVAN.LOCK", "job", 10_000, "OWNER", "someone-else"), None, "DIVAN.LOCK busy")
expect(r.execute_command("DIVAN.KEEPALIVE", "job", token, 10_000), token, "DIVAN.KEEPALIVE")
expect(r.execute_command("DIVAN.UNLOCK", "job", token), 1, "DIVAN.UNLOCK")
expect(r.execute_command("DIVAN.SEQUENCE", "ids", 10), [0, 10], "DIVAN.SEQUENCE")

# SCAN across many keys, KEYS, DBSIZE, FLUSHDB.
r.flushdb()
r.mset({f"user:{i:04}": i for i in range(1000)})
r.mset({f"order:{i}": i for i in range(10)})
scanned = list(r.scan_iter(match="user:*", count=77))
expect(len(scanned), 1000, "SCAN MATCH visits every key once")
expect(len(set(scanned)), 1000, "SCAN returns no key twice")
expect(sorted(r.keys("order:*")), sorted(f"order:{i}".encode() for i in range(10)), "KEYS")
expect(r.dbsize(), 1010, "DBSIZE")
expect(r.flushdb(), True, "FLUSHDB")
expect(r.dbsize(), 0, "DBSIZE after FLUSHDB")

# A pipeline of 10,000 commands: replies in order.
pipe = r.pipeline(transaction=False)
for i in range(5000):
    pipe.set(f"p:{i}", i)
    pipe.incr("counter")
replies = pipe.execute()
expect(len(replies), 10_000, "pipeline reply count")
expect(replies[0::2], [True] * 5000, "pipeline SET replies")
expect(replies[1::2], list(range(1, 5001)), "pipeline INCR replies in order")
expect(r.get("p:4999"), b"4999", "pipeline SET applied")


# Malformed streams close only their own connection.
def malformed(payload):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(payload)
        received = b""
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                return received
            received += chunk


for payload, message in [
    (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*2\r\n$4\r\nECHO\r\nxyz\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n"),
    (b"*\xff\xfe\x00garbage\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"PING\r\n*1\r\n$x\r\n", b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
    (b"\x00" * 65_537, b"-ERR Protocol error: too big inline request\r\n"),
]:
    expect(malformed(payload), message, f"reply to {payload[:20]!r}")
    expect(r.ping(), True, "the well-behaved client is unaffected")

print("ok")
