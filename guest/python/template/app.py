"""A specwright policy in Python: start here.

Build: componentize-py -d ../../../wit -w policy componentize app -o policy.wasm
Run:   specwright spec --request step.json --policy default --policy policy.wasm
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def generate(self, request, facts, settings, previous):
        # request: the step (request format v1 JSON); facts: the host facts;
        # settings: this policy's settings ("" when none); previous: the spec
        # the policy before this one wrote (None when this one is first).
        request = json.loads(request)
        if request.get("network", {}).get("mode") == "host":
            raise Err(types.PolicyError_Denied("the host network is not allowed"))
        if previous is None:
            raise Err(types.PolicyError_InvalidRequest("run me after another policy (--policy default first)"))
        return previous

    def metadata(self):
        return types.PolicyMetadata(name="my-policy", version="0.1.0", description="What this policy enforces.")
