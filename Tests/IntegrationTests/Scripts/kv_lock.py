"""Two redis-py clients of DIVAN.LOCK (Debian's python3-redis), each in its own process.

holder PORT NAME LEASE_MS
    Takes the lock ("locked TOKEN"), then renews it with DIVAN.KEEPALIVE four times per lease
    ("kept"), until a renewal fails ("lost REPLY"); then tries DIVAN.UNLOCK with its old token
    ("unlock REPLY") and exits. Pausing it (SIGSTOP) past its lease is what makes it lose the lock.

contender PORT NAME LEASE_MS STOPFILE
    Asks for the lock at once ("first REPLY"), then every 50 ms until it gets it ("locked TOKEN");
    waits for STOPFILE, then releases it ("unlock REPLY").
"""
import os
import sys
import time

import redis

role, port, name, lease = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=15)

if role == "holder":
    token = client.execute_command("DIVAN.LOCK", name, lease)
    print(f"locked {token}")
    while True:
        time.sleep(lease / 4000)
        renewed = client.execute_command("DIVAN.KEEPALIVE", name, token, lease)
        if renewed != token:
            print(f"lost {renewed}")
            break
        print("kept")
    print(f"unlock {client.execute_command('DIVAN.UNLOCK', name, token)}")
else:
    print(f"first {client.execute_command('DIVAN.LOCK', name, lease)}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        token = client.execute_command("DIVAN.LOCK", name, lease)
        if token is not None:
            print(f"locked {token}")
            break
        time.sleep(0.05)
    else:
        sys.exit("never got the lock")
    while not os.path.exists(sys.argv[5]):
        time.sleep(0.02)
    print(f"unlock {client.execute_command('DIVAN.UNLOCK', name, token)}")
