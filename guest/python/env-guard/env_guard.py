"""env-guard: denies a step whose env sets a variable whose name looks like
a secret's, and adds the variables its settings name where the step does
not set them. The same logic as the Rust policy in guest/env-guard and the
JavaScript one in guest/js/env-guard; the tests hold the three to the same
specs and denials.

Settings (all optional): {"deny": ["SECRET", ...], "env": ["NAME=value", ...]}.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

DEFAULT_DENY = ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE_KEY", "CREDENTIAL"]


def name_of(entry):
    return entry.split("=", 1)[0]


def denial(request, deny):
    for entry in request.get("env") or []:
        name, sep, value = entry.partition("=")
        if not sep or not value:
            continue
        for fragment in deny:
            if fragment.upper() in name.upper():
                return (
                    f"env {name} looks like a secret (it contains {fragment}); "
                    "pass secrets as secret mounts, not env"
                )
    return None


def minimal_spec(request):
    return {
        "ociVersion": "1.2.1",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": request.get("args") or [],
            "env": request.get("env") or [],
            "cwd": request.get("cwd") or "/",
        },
        "root": {"path": "rootfs"},
    }


class WitWorld(wit_world.WitWorld):
    def generate(self, request, facts, settings, previous):
        try:
            conf = json.loads(settings) if settings else {}
        except ValueError as e:
            raise Err(types.PolicyError_InvalidRequest(f"settings: {e}"))
        request = json.loads(request)
        reason = denial(request, conf.get("deny", DEFAULT_DENY))
        if reason is not None:
            raise Err(types.PolicyError_Denied(reason))
        spec = json.loads(previous) if previous is not None else minimal_spec(request)
        env = spec.setdefault("process", {}).setdefault("env", [])
        for entry in conf.get("env", []):
            if all(name_of(e) != name_of(entry) for e in env):
                env.append(entry)
        return json.dumps(spec)

    def metadata(self):
        return types.PolicyMetadata(
            name="env-guard",
            version="0.1.0",
            description="Denies steps whose env carries a secret-looking variable; adds env from its settings.",
        )
