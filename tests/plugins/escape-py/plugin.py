"""A plugin that tries to reach past its sandbox: each record names what to try (`do`), and is
kept when the attempt sees what weir grants (nothing), failed with the error otherwise."""

import os
import sys
import time

import weir


def attempt(what):
    if what == "open":
        return open("/etc/hostname").read() is None
    if what == "write":
        with open("/tmp/escape-py", "w") as f:
            f.write("out")
        return False
    if what == "listdir":
        return os.listdir("/") is None
    if what == "socket":
        import socket  # noqa: F401 (not in the snapshot: a fresh import needs files)
        return False
    if what == "clock":
        return time.time() == 0
    if what == "sleep":
        before = time.monotonic()
        time.sleep(3600)
        return time.monotonic() == before
    if what == "environment":
        return len(os.environ) == 0
    if what == "print":
        print("printed from a plugin")
        print("and to stderr", file=sys.stderr)
        print("x" * 10000)
        return True
    raise weir.Fail(f"unknown attempt {what}")


@weir.filter
def escape(record):
    return attempt(record.json()["do"])
