//! What a policy changed, as an RFC 6902 JSON Patch: the operations that
//! turn the spec it received into the spec it returned.
//!
//! Objects are compared key by key (a removed key is `remove`, a new one
//! `add`, a changed one compared further); arrays of the same length
//! element by element; anything else that differs, an array whose length
//! changed included, is one `replace` of the whole value. Paths are JSON
//! Pointers (RFC 6901: `~` written `~0`, `/` written `~1`). Applied to the
//! spec received, the patch gives the spec returned.

use serde_json::{json, Map, Value};

/// The patch that turns `before` into `after`; empty when they are equal.
pub fn diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    diff_at(&mut String::new(), before, after, &mut ops);
    ops
}

fn diff_at(path: &mut String, before: &Value, after: &Value, ops: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => diff_objects(path, b, a, ops),
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (b, a)) in b.iter().zip(a).enumerate() {
                within(path, &i.to_string(), |path| diff_at(path, b, a, ops));
            }
        }
        (b, a) if b == a => {}
        (_, a) => ops.push(json!({"op": "replace", "path": path.as_str(), "value": a})),
    }
}

fn diff_objects(path: &mut String, before: &Map<String, Value>, after: &Map<String, Value>, ops: &mut Vec<Value>) {
    for (key, b) in before {
        within(path, key, |path| match after.get(key) {
            Some(a) => diff_at(path, b, a, ops),
            None => ops.push(json!({"op": "remove", "path": path.as_str()})),
        });
    }
    for (key, a) in after {
        if !before.contains_key(key) {
            within(path, key, |path| {
                ops.push(json!({"op": "add", "path": path.as_str(), "value": a}))
            });
        }
    }
}

/// Runs `f` with `path` extended by the reference token `token`, escaped.
fn within(path: &mut String, token: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    f(path);
    path.truncate(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_need_no_operation() {
        let spec = json!({"process": {"args": ["/bin/sh"], "env": ["A=1"]}, "hostname": "h"});
        assert!(diff(&spec, &spec.clone()).is_empty());
    }

    #[test]
    fn each_kind_of_change_is_its_operation_at_its_escaped_path() {
        let before = json!({
            "process": {"env": ["A=1", "B=2"], "args": ["/bin/sh"]},
            "annotations": {"a/b": "1", "c~d": "2"},
            "hostname": "h",
            "mounts": [{"destination": "/a"}]
        });
        let after = json!({
            "process": {"env": ["A=1", "B=3"], "args": ["/bin/sh"]},
            "annotations": {"c~d": "2", "new": "x"},
            "mounts": [{"destination": "/a"}, {"destination": "/b"}],
            "linux": {}
        });
        // Operations on different paths, in whatever order the maps keep
        // their keys.
        let mut ops = diff(&before, &after);
        ops.sort_by_key(|op| op["path"].as_str().unwrap_or_default().to_string());
        assert_eq!(
            ops,
            vec![
                json!({"op": "remove", "path": "/annotations/a~1b"}),
                json!({"op": "add", "path": "/annotations/new", "value": "x"}),
                json!({"op": "remove", "path": "/hostname"}),
                json!({"op": "add", "path": "/linux", "value": {}}),
                json!({"op": "replace", "path": "/mounts", "value": [{"destination": "/a"}, {"destination": "/b"}]}),
                json!({"op": "replace", "path": "/process/env/1", "value": "B=3"}),
            ]
        );
    }

    #[test]
    fn a_value_replacing_nothing_replaces_the_whole_document() {
        let after = json!({"ociVersion": "1.2.1"});
        assert_eq!(
            diff(&Value::Null, &after),
            vec![json!({"op": "replace", "path": "", "value": after})]
        );
    }
}
