//! A JSON Schema (draft 4) checker for exactly the keywords the OCI
//! runtime-spec schema uses, interpreting the schema as it stands.
//!
//! Why not a general validator: `jsonschema` compiles the whole schema tree
//! before it checks anything, 3 to 4 ms and 8 MB on every CLI start, more
//! than the policy's own run. Interpreting costs only the parse of the
//! embedded files a spec reaches (the Linux ones, ~35 of the ~45 KB: a file
//! is parsed when a `$ref` first leads to it), and a pattern is compiled the
//! first time a spec has a value it applies to. A schema given at run time
//! is checked when it loads ([`Schema::load`]): a keyword this checker does
//! not implement, or a `$ref` that does not resolve, is an error rather than
//! a silently skipped rule. The embedded one ([`Schema::embedded`]) is not
//! checked again at every start: a test loads it checked and compiles every
//! pattern. Tests and the `policy_output` fuzz target hold its verdicts
//! equal to `jsonschema`'s.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::strict_json::Place;

/// Keywords this checker implements; annotations it may ignore.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "items",
    "minItems",
    "anyOf",
    "allOf",
];
const ANNOTATIONS: &[&str] = &["$schema", "id", "description", "definitions"];

/// A `$ref` chain longer than this (with no instance consumed) is a loop.
const MAX_DEPTH: usize = 512;

pub struct Schema {
    files: HashMap<&'static str, SchemaFile>,
    root: &'static str,
    /// Each pattern compiled when first used.
    patterns: Mutex<HashMap<String, Result<Regex, String>>>,
}

/// A schema file's text, parsed when first reached (`None`: it does not
/// parse, and every reference into it fails to resolve).
struct SchemaFile {
    text: &'static str,
    parsed: OnceLock<Option<Value>>,
}

impl SchemaFile {
    fn value(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_str(self.text).ok())
            .as_ref()
    }
}

impl Schema {
    /// Loads `files` (name, text), `root` among them, and checks that every
    /// keyword is implemented and every reference resolves.
    pub fn load(files: &[(&'static str, &'static str)], root: &'static str) -> Result<Schema, String> {
        let schema = Self::embedded(files, root)?;
        let mut patterns = Vec::new();
        for (name, file) in &schema.files {
            let value = file.value().ok_or_else(|| {
                let error = serde_json::from_str::<Value>(file.text).err();
                format!("{name}: {}", error.map_or_else(String::new, |e| e.to_string()))
            })?;
            schema.check_schema_file(name, value, &mut patterns)?;
        }
        Ok(schema)
    }

    /// `files` (name, text), `root` among them, taken as they are: each
    /// file parsed when a reference first reaches it, nothing checked. For
    /// the embedded schema, which a test loads with [`Schema::load`].
    pub(crate) fn embedded(files: &[(&'static str, &'static str)], root: &'static str) -> Result<Schema, String> {
        if !files.iter().any(|(name, _)| *name == root) {
            return Err(format!("{root}: not among the schema files"));
        }
        Ok(Schema {
            files: files
                .iter()
                .map(|(name, text)| {
                    let file = SchemaFile {
                        text,
                        parsed: OnceLock::new(),
                    };
                    (*name, file)
                })
                .collect(),
            root,
            patterns: Mutex::new(HashMap::new()),
        })
    }

    /// Compiles every pattern of the schema now; `Err` names the first
    /// that does not.
    pub fn compile_all_patterns(&self) -> Result<usize, String> {
        let mut patterns = Vec::new();
        for (name, file) in &self.files {
            let value = file.value().ok_or_else(|| format!("{name}: does not parse"))?;
            self.check_schema_file(name, value, &mut patterns)?;
        }
        for pattern in &patterns {
            self.regex(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        }
        Ok(patterns.len())
    }

    /// The root file's schema, when it parses.
    fn root_value(&self) -> Option<&Value> {
        self.files.get(self.root).and_then(SchemaFile::value)
    }

    /// Every violation in `instance`, each with where it is.
    pub fn errors(&self, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let mut at = String::new();
        match self.root_value() {
            Some(root) => self.check(self.root, root, instance, &mut at, &mut errors, 0),
            None => report(&mut errors, &at, format!("the schema's {} does not parse", self.root)),
        }
        errors
    }

    fn check_schema_file(&self, file: &'static str, value: &Value, patterns: &mut Vec<String>) -> Result<(), String> {
        let Value::Object(top) = value else {
            return Err(format!("{file}: not an object"));
        };
        // A file is either a schema or a holder of named schemas
        // (`defs.json`'s "definitions", `config-linux.json`'s "linux").
        if top.keys().any(|k| KEYWORDS.contains(&k.as_str())) {
            self.check_schema(file, value, patterns, file)
        } else {
            for (name, sub) in top {
                if name == "definitions" {
                    self.check_definitions(file, sub, patterns, &format!("{file}#/definitions"))?;
                } else if !ANNOTATIONS.contains(&name.as_str()) {
                    self.check_schema(file, sub, patterns, &format!("{file}#/{name}"))?;
                }
            }
            Ok(())
        }
    }

    fn check_definitions(
        &self,
        file: &'static str,
        defs: &Value,
        patterns: &mut Vec<String>,
        at: &str,
    ) -> Result<(), String> {
        let Value::Object(defs) = defs else {
            return Err(format!("{at}: definitions must be an object"));
        };
        defs.iter()
            .try_for_each(|(name, sub)| self.check_schema(file, sub, patterns, &format!("{at}/{name}")))
    }

    fn check_schema(
        &self,
        file: &'static str,
        schema: &Value,
        patterns: &mut Vec<String>,
        at: &str,
    ) -> Result<(), String> {
        let Value::Object(map) = schema else {
            return Err(format!("{at}: a schema must be an object"));
        };
        for (key, value) in map {
            let here = format!("{at}/{key}");
            match key.as_str() {
                "$ref" => {
                    let target = value.as_str().ok_or_else(|| format!("{here}: not a string"))?;
                    self.resolve(file, target)
                        .ok_or_else(|| format!("{here}: {target:?} does not resolve"))?;
                }
                "pattern" => {
                    let pattern = value.as_str().ok_or_else(|| format!("{here}: not a string"))?;
                    patterns.push(pattern.to_string());
                }
                "properties" => {
                    let Value::Object(props) = value else {
                        return Err(format!("{here}: not an object"));
                    };
                    for (name, sub) in props {
                        self.check_schema(file, sub, patterns, &format!("{here}/{name}"))?;
                    }
                }
                "patternProperties" => {
                    let Value::Object(props) = value else {
                        return Err(format!("{here}: not an object"));
                    };
                    for (pattern, sub) in props {
                        patterns.push(pattern.clone());
                        self.check_schema(file, sub, patterns, &format!("{here}/{pattern}"))?;
                    }
                }
                "additionalProperties" => {
                    if !value.is_boolean() {
                        self.check_schema(file, value, patterns, &here)?;
                    }
                }
                "items" => match value {
                    Value::Array(items) => {
                        for (i, sub) in items.iter().enumerate() {
                            self.check_schema(file, sub, patterns, &format!("{here}/{i}"))?;
                        }
                    }
                    sub => self.check_schema(file, sub, patterns, &here)?,
                },
                "anyOf" | "allOf" => {
                    let subs = value.as_array().filter(|a| !a.is_empty());
                    let subs = subs.ok_or_else(|| format!("{here}: not a non-empty array"))?;
                    for (i, sub) in subs.iter().enumerate() {
                        self.check_schema(file, sub, patterns, &format!("{here}/{i}"))?;
                    }
                }
                "type" => {
                    let names: Vec<&Value> = match value {
                        Value::Array(names) => names.iter().collect(),
                        one => vec![one],
                    };
                    for name in names {
                        let known = name.as_str().is_some_and(|n| {
                            ["object", "array", "string", "integer", "number", "boolean", "null"].contains(&n)
                        });
                        if !known {
                            return Err(format!("{here}: unknown type {name}"));
                        }
                    }
                }
                "enum" => {
                    value.as_array().ok_or_else(|| format!("{here}: not an array"))?;
                }
                "minimum" | "maximum" => {
                    value.as_f64().ok_or_else(|| format!("{here}: not a number"))?;
                }
                "minItems" => {
                    value.as_u64().ok_or_else(|| format!("{here}: not a count"))?;
                }
                "required" => {
                    let names = value.as_array().ok_or_else(|| format!("{here}: not an array"))?;
                    if !names.iter().all(Value::is_string) {
                        return Err(format!("{here}: not an array of names"));
                    }
                }
                "definitions" => self.check_definitions(file, value, patterns, &here)?,
                other if ANNOTATIONS.contains(&other) => {}
                other => return Err(format!("{at}: keyword {other:?} is not implemented")),
            }
        }
        Ok(())
    }

    /// Every key of `instance` the schema does not define: in an object the
    /// schema gives field by field (`properties`), a key that is none of
    /// them and matches none of its `patternProperties`. Free-form maps
    /// (`annotations`, `linux.sysctl`) define no fields and take any key.
    /// Where several schemas apply to one object (`allOf`, `anyOf`, a
    /// `$ref`), the fields of all of them count.
    pub fn undefined_fields(&self, instance: &Value) -> Vec<UndefinedField> {
        let mut found = Vec::new();
        let mut schemas = Vec::new();
        if let Some(root) = self.root_value() {
            self.expand(self.root, root, &mut schemas, 0);
        }
        self.undefined_in(&schemas, instance, &Place::Top, &mut found);
        found
    }

    /// `schema` and what it stands for: the target of its `$ref`, and each
    /// of its `allOf` and `anyOf` schemas, as (file, object) pairs.
    fn expand<'s>(
        &'s self,
        file: &'static str,
        schema: &'s Value,
        into: &mut Vec<(&'static str, &'s Map<String, Value>)>,
        depth: usize,
    ) {
        let Value::Object(map) = schema else {
            return;
        };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(target) = map.get("$ref").and_then(Value::as_str) {
            if let Some((file, sub)) = self.resolve(file, target) {
                self.expand(file, sub, into, depth + 1);
            }
            return;
        }
        into.push((file, map));
        for keyword in ["allOf", "anyOf"] {
            for sub in map.get(keyword).and_then(Value::as_array).into_iter().flatten() {
                self.expand(file, sub, into, depth + 1);
            }
        }
    }

    fn undefined_in(
        &self,
        schemas: &[(&'static str, &Map<String, Value>)],
        instance: &Value,
        place: &Place<'_>,
        found: &mut Vec<UndefinedField>,
    ) {
        match instance {
            Value::Object(fields) => {
                let mut defined: Vec<&str> = Vec::new();
                for (_, schema) in schemas {
                    if let Some(Value::Object(properties)) = schema.get("properties") {
                        defined.extend(properties.keys().map(String::as_str));
                    }
                }
                for (name, value) in fields {
                    let mut subs = Vec::new();
                    let mut named = false;
                    for (file, schema) in schemas {
                        let mut here = false;
                        if let Some(sub) = schema.get("properties").and_then(|p| p.get(name)) {
                            here = true;
                            self.expand(file, sub, &mut subs, 0);
                        }
                        for (pattern, sub) in schema
                            .get("patternProperties")
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                        {
                            if self.regex(pattern).is_ok_and(|re| re.is_match(name)) {
                                here = true;
                                self.expand(file, sub, &mut subs, 0);
                            }
                        }
                        if !here {
                            if let Some(sub @ Value::Object(_)) = schema.get("additionalProperties") {
                                self.expand(file, sub, &mut subs, 0);
                            }
                        }
                        named |= here;
                    }
                    let field = Place::Field(place, name);
                    if !defined.is_empty() && !named {
                        found.push(UndefinedField {
                            place: field.to_string(),
                            folds_onto: defined
                                .iter()
                                .find(|known| folded(known) == folded(name))
                                .map(|known| known.to_string()),
                        });
                        continue;
                    }
                    self.undefined_in(&subs, value, &field, found);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut subs = Vec::new();
                    for (file, schema) in schemas {
                        match schema.get("items") {
                            Some(Value::Array(positional)) => {
                                if let Some(sub) = positional.get(i) {
                                    self.expand(file, sub, &mut subs, 0);
                                }
                            }
                            Some(sub) => self.expand(file, sub, &mut subs, 0),
                            None => {}
                        }
                    }
                    self.undefined_in(&subs, item, &Place::Item(place, i), found);
                }
            }
            _ => {}
        }
    }

    /// `file.json#/json/pointer`, or `#/pointer` within `from`.
    fn resolve<'s>(&'s self, from: &'static str, target: &str) -> Option<(&'static str, &'s Value)> {
        let (file, pointer) = target.split_once('#').unwrap_or((target, ""));
        let (name, file) = if file.is_empty() {
            (from, self.files.get(from)?)
        } else {
            self.files.get_key_value(file).map(|(k, v)| (*k, v))?
        };
        Some((name, file.value()?.pointer(pointer)?))
    }

    /// `pattern` compiled (once; a clone of a compiled regex is cheap).
    fn regex(&self, pattern: &str) -> Result<Regex, String> {
        let mut patterns = self.patterns.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        patterns
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()))
            .clone()
    }

    fn check(
        &self,
        file: &'static str,
        schema: &Value,
        instance: &Value,
        at: &mut String,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            report(errors, at, "the schema's references nest too deep".to_string());
            return;
        }
        let Value::Object(schema) = schema else {
            report(errors, at, "the schema is not an object".to_string());
            return;
        };
        // Draft 4: a reference replaces every keyword beside it.
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(file, target) {
                Some((file, sub)) => self.check(file, sub, instance, at, errors, depth + 1),
                None => report(errors, at, format!("reference {target:?} does not resolve")),
            }
            return;
        }
        if let Some(kinds) = schema.get("type") {
            let matches = |kind: &Value| kind.as_str().is_some_and(|k| is_of_type(instance, k));
            let ok = match kinds {
                Value::Array(kinds) => kinds.iter().any(matches),
                kind => matches(kind),
            };
            if !ok {
                report(errors, at, format!("{instance} is not of type {kinds}"));
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            if !allowed.iter().any(|a| json_equal(a, instance)) {
                report(
                    errors,
                    at,
                    format!("{instance} is not one of {}", Value::Array(allowed.clone())),
                );
            }
        }
        if let Value::Number(n) = instance {
            if let Some(min) = schema.get("minimum").and_then(Value::as_number) {
                if compare(n, min).is_lt() {
                    report(errors, at, format!("{n} is less than the minimum of {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_number) {
                if compare(n, max).is_gt() {
                    report(errors, at, format!("{n} is greater than the maximum of {max}"));
                }
            }
        }
        if let (Value::String(s), Some(pattern)) = (instance, schema.get("pattern").and_then(Value::as_str)) {
            match self.regex(pattern) {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => report(errors, at, format!("{instance} does not match {pattern:?}")),
                Err(e) => report(errors, at, format!("pattern {pattern:?}: {e}")),
            }
        }
        if let Value::Array(items) = instance {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    report(errors, at, format!("{instance} has fewer than {min} items"));
                }
            }
            match schema.get("items") {
                Some(Value::Array(positional)) => {
                    for (i, (item, sub)) in items.iter().zip(positional).enumerate() {
                        self.check_at(file, sub, item, at, &i.to_string(), errors, depth);
                    }
                }
                Some(sub) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_at(file, sub, item, at, &i.to_string(), errors, depth);
                    }
                }
                None => {}
            }
        }
        if let Value::Object(fields) = instance {
            self.check_object(file, schema, fields, at, errors, depth);
        }
        for (keyword, all) in [("allOf", true), ("anyOf", false)] {
            let Some(Value::Array(subs)) = schema.get(keyword) else {
                continue;
            };
            if all {
                for sub in subs {
                    self.check(file, sub, instance, at, errors, depth + 1);
                }
            } else {
                let any = subs.iter().any(|sub| {
                    let mut scratch = Vec::new();
                    self.check(file, sub, instance, at, &mut scratch, depth + 1);
                    scratch.is_empty()
                });
                if !any {
                    let message = format!("{instance} is not valid under any of the schemas listed in anyOf");
                    report(errors, at, message);
                }
            }
        }
    }

    fn check_object(
        &self,
        file: &'static str,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        at: &mut String,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    let message = format!("{name:?} is a required property");
                    report(errors, at, message);
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let pattern_properties = schema.get("patternProperties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, value) in fields {
            let mut named = false;
            if let Some(sub) = properties.and_then(|p| p.get(name)) {
                named = true;
                self.check_at(file, sub, value, at, name, errors, depth);
            }
            for (pattern, sub) in pattern_properties.into_iter().flatten() {
                match self.regex(pattern) {
                    Ok(re) if re.is_match(name) => {
                        named = true;
                        self.check_at(file, sub, value, at, name, errors, depth);
                    }
                    Ok(_) => {}
                    Err(e) => report(errors, at, format!("pattern {pattern:?}: {e}")),
                }
            }
            match additional {
                Some(Value::Bool(false)) if !named => {
                    let message = format!("additional property {name:?} is not allowed");
                    report(errors, at, message);
                }
                Some(sub @ Value::Object(_)) if !named => self.check_at(file, sub, value, at, name, errors, depth),
                _ => {}
            }
        }
    }

    /// Checks `instance` (the member `step` of what `at` names) against `schema`.
    #[allow(clippy::too_many_arguments)]
    fn check_at(
        &self,
        file: &'static str,
        schema: &Value,
        instance: &Value,
        at: &mut String,
        step: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        let len = at.len();
        at.push('/');
        // JSON Pointer escaping, so that the place can be looked up.
        if step.contains(['~', '/']) {
            at.push_str(&step.replace('~', "~0").replace('/', "~1"));
        } else {
            at.push_str(step);
        }
        self.check(file, schema, instance, at, errors, depth + 1);
        at.truncate(len);
    }
}

/// A key the schema does not define where it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedField {
    /// Where: `process.Capabilities`.
    pub place: String,
    /// The defined field it is the same as but for case, as Go's
    /// `encoding/json` (runc) matches keys: ASCII case, and `ſ` for `s`
    /// and the Kelvin sign for `k` (Unicode simple folding).
    pub folds_onto: Option<String>,
}

/// A key as Go's `encoding/json` compares it with a field name.
pub fn folded(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// One violation, with where it is (nothing for the document itself).
fn report(errors: &mut Vec<String>, at: &str, message: String) {
    errors.push(if at.is_empty() {
        message
    } else {
        format!("at {at}: {message}")
    });
}

fn is_of_type(instance: &Value, kind: &str) -> bool {
    match kind {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "number" => instance.is_number(),
        "integer" => instance
            .as_number()
            .is_some_and(|n| n.is_i64() || n.is_u64() || is_whole(n)),
        "boolean" => instance.is_boolean(),
        "null" => instance.is_null(),
        _ => false,
    }
}

/// Draft 4's integer is a number written without fraction or exponent, so
/// `1.0` is not one. serde_json keeps such a number as i64 or u64 unless it
/// is too big for 64 bits; a whole float that large may have been written as
/// an integer, and counts (as the `jsonschema` crate decides).
fn is_whole(n: &serde_json::Number) -> bool {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    n.as_f64()
        .is_some_and(|f| f.fract() == 0.0 && (f >= TWO_POW_63 || f <= -TWO_POW_63))
}

/// Numbers compare by exact value whatever their representation (an f64
/// just above `u64::MAX` is above it, not equal after rounding).
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
    let exact = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    let float = |n: &serde_json::Number| n.as_f64().unwrap_or(f64::NAN);
    match (exact(a), exact(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(a), None) => compare_int_float(a, float(b)),
        (None, Some(b)) => compare_int_float(b, float(a)).reverse(),
        (None, None) => float(a).partial_cmp(&float(b)).unwrap_or(Ordering::Equal),
    }
}

fn compare_int_float(int: i128, float: f64) -> Ordering {
    // Beyond ±2^100 no 64-bit integer comes close.
    const FAR: f64 = 1.267_650_600_228_229_4e30;
    if float.is_nan() {
        return Ordering::Equal;
    }
    if float >= FAR {
        return Ordering::Less;
    }
    if float <= -FAR {
        return Ordering::Greater;
    }
    let floor = float.floor();
    // Exact: a whole f64 below 2^100 converts to i128 without rounding.
    match int.cmp(&(floor as i128)) {
        Ordering::Equal if float > floor => Ordering::Less,
        order => order,
    }
}

/// JSON equality, with 1 and 1.0 equal.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => compare(a, b).is_eq(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equal(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests;
