// A JavaScript policy that misbehaves as its settings' "mode" says, so the
// tests can show the host contains it: the same sandbox as any policy.

import { canonicalPath } from "specwright:policy/host@0.2.1";

function entropy() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return {
    time: String(Date.now()),
    monotonic: String(performance.now()),
    random: String(Math.random()),
    urandom: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""),
  };
}

export async function generate(requestJson, facts, settings, previous) {
  const mode = settings ? JSON.parse(settings).mode : undefined;
  const spec = previous !== undefined && previous !== null ? JSON.parse(previous) : null;
  switch (mode) {
    case "loop":
      for (;;) {}
    case "hoard": {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    case "read-file": {
      const response = await fetch("file:///etc/hostname");
      spec.hostname = (await response.text()).trim();
      return JSON.stringify(spec);
    }
    case "network": {
      const response = await fetch("http://192.0.2.1/");
      spec.hostname = String(response.status);
      return JSON.stringify(spec);
    }
    case "entropy":
      // Time does not pass for a policy: this is over at once.
      await new Promise((resolve) => setTimeout(resolve, 30000));
      spec.annotations = entropy();
      return JSON.stringify(spec);
    case "host-call":
      // A path the request does not name: the host refuses to look.
      try {
        canonicalPath("/etc");
        spec.annotations = { host: "answered" };
      } catch (e) {
        spec.annotations = { host: JSON.stringify(e.payload ?? e) };
      }
      spec.annotations.kernel = facts.kernelRelease;
      return JSON.stringify(spec);
    case "print":
      console.log("to stdout from js");
      console.error("to stderr from js");
      throw new Error("failing after printing, on purpose");
    default:
      throw { tag: "invalid-request", val: `unknown test mode ${mode}` };
  }
}

export function metadata() {
  return { name: "hostile-js", version: "0", description: "Misbehaves as its settings say, for tests." };
}
