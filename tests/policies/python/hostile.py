"""A Python policy that misbehaves as its settings' "mode" says, so the tests
can show the host contains it: the same sandbox as any policy."""

import json
import os
import random
import sys
import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def entropy():
    """What a policy could learn of the world, were it not fixed."""
    return {
        "time": str(time.time()),
        "monotonic": str(time.monotonic()),
        "random": str(random.random()),
        "urandom": os.urandom(8).hex(),
        "environ": json.dumps(dict(os.environ)),
        "argv": json.dumps(sys.argv),
    }


class WitWorld(wit_world.WitWorld):
    def generate(self, request, facts, settings, previous):
        mode = json.loads(settings).get("mode") if settings else None
        spec = json.loads(previous) if previous is not None else None
        if mode == "loop":
            while True:
                pass
        if mode == "hoard":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if mode == "read-file":
            with open("/etc/hostname") as f:
                spec["hostname"] = f.read().strip()
            return json.dumps(spec)
        if mode == "network":
            import socket

            socket.create_connection(("192.0.2.1", 80), timeout=1)
            return json.dumps(spec)
        if mode == "entropy":
            # Time does not pass for a policy: this returns at once.
            time.sleep(30)
            spec["annotations"] = entropy()
            return json.dumps(spec)
        if mode == "host-call":
            # A path the request does not name: the host refuses to look.
            try:
                host.canonical_path("/etc")
                spec["annotations"] = {"host": "answered"}
            except Err as e:
                spec["annotations"] = {"host": repr(e.value)}
            spec["annotations"]["kernel"] = facts.kernel_release
            return json.dumps(spec)
        if mode == "print":
            print("to stdout from python")
            print("to stderr from python", file=sys.stderr)
            raise RuntimeError("failing after printing, on purpose")
        if mode == "exit":
            sys.exit(3)
        raise Err(types.PolicyError_InvalidRequest(f"unknown test mode {mode!r}"))

    def metadata(self):
        return types.PolicyMetadata(name="hostile-py", version="0", description="Misbehaves as its settings say, for tests.")
