//! JSON read the one way every reader of it agrees on. Parsers differ on
//! what they do with a key given twice (Go's `encoding/json`, which runc
//! uses, keeps the last; crun's yajl-based parser finds the first) and on
//! a NUL inside a string (Go keeps it and the kernel refuses it; C
//! stops the string there, so crun reads `/proc\u0000/x` as `/proc`).
//! Both are refused here, naming where they are, so that whatever this
//! host accepts, every runtime reads as the policies did.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Where a value sits in a document: `process.capabilities.bounding[2]`.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    Top,
    Field(&'a Place<'a>, &'a str),
    Item(&'a Place<'a>, usize),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Top => f.write_str("(the document)"),
            Place::Field(Place::Top, name) => f.write_str(name),
            Place::Field(parent, name) => write!(f, "{parent}.{name}"),
            Place::Item(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Parses `text` as JSON, refusing a key given twice in one object and a
/// NUL character in any string or key; the message names the place.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Strict(Place::Top).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Strict<'a>(Place<'a>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn no_nul<E: de::Error>(place: &Place<'_>, text: &str, what: &str) -> Result<(), E> {
    if text.contains('\0') {
        return Err(E::custom(format!("`{place}`: a NUL character in {what}")));
    }
    Ok(())
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("`{}`: {v} is no JSON number", self.0)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        no_nul(&self.0, v, "a string")?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        no_nul(&self.0, &v, "a string")?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let place = Place::Item(&self.0, items.len());
            match seq.next_element_seed(Strict(place))? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let place = Place::Field(&self.0, &key);
            no_nul(&place, &key, "a key")?;
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "`{place}`: the key is given twice (runtimes disagree on which one counts)"
                )));
            }
            let value = map.next_value_seed(Strict(place))?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_serde_json_reads_is_read_the_same() {
        let text = r#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": {}}, "d": 18446744073709551615}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        let err = parse(r#"{"process": {"args": ["a"], "args": ["b"]}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`process.args`: the key is given twice"), "{err}");
        let err = parse(r#"{"linux": {"namespaces": [{"type": "pid"}, {"type": "net", "type": "x"}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux.namespaces[1].type"), "{err}");
        let err = parse(r#"{"a": 1, "a": 1}"#).unwrap_err().to_string();
        assert!(err.starts_with("`a`: the key is given twice"), "{err}");
    }

    #[test]
    fn a_nul_in_a_string_or_key_is_refused() {
        let err = parse(r#"{"mounts": [{"destination": "/proc\u0000/x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mounts[0].destination`: a NUL character"), "{err}");
        let err = parse(r#"{"a\u0000b": 1}"#).unwrap_err().to_string();
        assert!(err.contains("NUL character in a key"), "{err}");
    }

    #[test]
    fn trailing_text_and_lone_surrogates_are_errors() {
        assert!(parse("{} {}").is_err());
        assert!(parse(r#"{"a": "\ud800"}"#).is_err());
    }
}
