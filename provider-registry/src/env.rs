//! Environment access (injectable for tests) and `{env:NAME}` substitution.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Read access to environment variables.
pub trait Env {
    /// The value of `name`, `None` when unset.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// An in-memory environment for tests and embedding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a variable (builder style).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Unset variables met during substitution: `(json path, variable name)`, document order.
pub(crate) type Unset = Vec<(String, String)>;

/// Replaces every `{env:NAME}` in every string value of `v` (recursively; keys untouched).
/// `NAME` is `[A-Za-z_][A-Za-z0-9_]*`; other braces are left alone. Unset variables become
/// `""` and are recorded with the JSON path of the string.
pub(crate) fn substitute(v: &mut Value, path: &str, env: &dyn Env, unset: &mut Unset) {
    match v {
        Value::String(s) if s.contains("{env:") => {
            *s = substitute_str(s, path, env, unset);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, unset);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                substitute(item, &child(path, k), env, unset);
            }
        }
        _ => {}
    }
}

/// JSON path of an object member.
pub(crate) fn child(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}

fn substitute_str(s: &str, path: &str, env: &dyn Env, unset: &mut Unset) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = &after[..name_len];
        let valid = name_len > 0
            && !name.as_bytes()[0].is_ascii_digit()
            && after.as_bytes().get(name_len) == Some(&b'}');
        if valid {
            match env.var(name) {
                Some(val) => out.push_str(&val),
                None => unset.push((path.to_owned(), name.to_owned())),
            }
            rest = &after[name_len + 1..];
        } else {
            out.push_str("{env:");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_embedded_and_records_unset() {
        let env = MapEnv::new().with("A", "x").with("EMPTY", "");
        let mut v = serde_json::json!({"k": "pre-{env:A}-{env:B}-{env:EMPTY}{env:}{env:1X}", "arr": ["{env:A}"]});
        let mut unset = Vec::new();
        substitute(&mut v, "$", &env, &mut unset);
        assert_eq!(v["k"], "pre-x--{env:}{env:1X}");
        assert_eq!(v["arr"][0], "x");
        assert_eq!(unset, vec![("$.k".to_owned(), "B".to_owned())]);
    }

    #[test]
    fn paths_quote_odd_keys() {
        assert_eq!(child("$", "providers"), "$.providers");
        assert_eq!(child("$.headers", "x-api-key"), "$.headers[\"x-api-key\"]");
    }
}
