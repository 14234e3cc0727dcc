// A specwright policy in JavaScript: start here.
//
// Build: componentize-js --wit ../../../wit --world-name policy -o policy.wasm policy.js
// Run:   specwright spec --request step.json --policy default --policy policy.wasm

// request: the step (request format v1 JSON); facts: the host facts;
// settings: this policy's settings ("" when none); previous: the spec the
// policy before this one wrote (undefined when this one is first).
// Return the spec, or throw {tag: "denied" | "invalid-request" | "internal", val: "why"}.
export function generate(requestJson, facts, settings, previous) {
  const request = JSON.parse(requestJson);
  if (request.network?.mode === "host") {
    throw { tag: "denied", val: "the host network is not allowed" };
  }
  if (previous === undefined || previous === null) {
    throw { tag: "invalid-request", val: "run me after another policy (--policy default first)" };
  }
  return previous;
}

export function metadata() {
  return { name: "my-policy", version: "0.1.0", description: "What this policy enforces." };
}
