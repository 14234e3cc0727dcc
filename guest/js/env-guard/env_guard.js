// env-guard: denies a step whose env sets a variable whose name looks like
// a secret's, and adds the variables its settings name where the step does
// not set them. The same logic as the Rust policy in guest/env-guard and the
// Python one in guest/python/env-guard; the tests hold the three to the
// same specs and denials.
//
// Settings (all optional): {"deny": ["SECRET", ...], "env": ["NAME=value", ...]}.

const DEFAULT_DENY = ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE_KEY", "CREDENTIAL"];

const nameOf = (entry) => entry.split("=", 1)[0];

function denial(request, deny) {
  for (const entry of request.env ?? []) {
    const at = entry.indexOf("=");
    if (at < 0) continue;
    const name = entry.slice(0, at);
    if (entry.slice(at + 1) === "") continue;
    for (const fragment of deny) {
      if (name.toUpperCase().includes(fragment.toUpperCase())) {
        return `env ${name} looks like a secret (it contains ${fragment}); pass secrets as secret mounts, not env`;
      }
    }
  }
  return null;
}

function minimalSpec(request) {
  return {
    ociVersion: "1.2.1",
    process: {
      user: { uid: 0, gid: 0 },
      args: request.args ?? [],
      env: request.env ?? [],
      cwd: request.cwd || "/",
    },
    root: { path: "rootfs" },
  };
}

// A result<string, policy-error> export: return the spec, or throw the
// error variant ({tag, val}).
export function generate(requestJson, facts, settings, previous) {
  let conf;
  try {
    conf = settings ? JSON.parse(settings) : {};
  } catch (e) {
    throw { tag: "invalid-request", val: `settings: ${e.message}` };
  }
  const request = JSON.parse(requestJson);
  const reason = denial(request, conf.deny ?? DEFAULT_DENY);
  if (reason !== null) throw { tag: "denied", val: reason };
  const spec = previous !== undefined && previous !== null ? JSON.parse(previous) : minimalSpec(request);
  spec.process ??= {};
  spec.process.env ??= [];
  for (const entry of conf.env ?? []) {
    if (spec.process.env.every((e) => nameOf(e) !== nameOf(entry))) spec.process.env.push(entry);
  }
  return JSON.stringify(spec);
}

export function metadata() {
  return {
    name: "env-guard",
    version: "0.1.0",
    description: "Denies steps whose env carries a secret-looking variable; adds env from its settings.",
  };
}
