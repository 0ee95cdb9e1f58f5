//! A small JSON skimmer: finds the top-level `"model"` and `"stream"` of a request body without
//! deserializing it, and splices a new model id into the bytes.
//!
//! The skimmer walks the top-level object once (strings are skipped with `memchr`), checks the
//! structure (balanced brackets, closed strings, `key: value` pairs, nothing after the object)
//! and records the byte span of the `model` string literal.

use std::borrow::Cow;
use std::ops::Range;

/// What the skimmer found in a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skimmed<'a> {
    /// The top-level `model` value, unescaped (borrowed when it has no escapes).
    pub model: Option<Cow<'a, str>>,
    /// Byte span of the `model` string literal, quotes included.
    pub model_span: Range<usize>,
    /// Whether the top-level `"stream"` is `true`.
    pub stream: bool,
}

/// Why a body could not be skimmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkimError {
    /// Malformed JSON at the given byte offset.
    #[error("{what} at byte {at}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
        /// Byte offset.
        at: usize,
    },
    /// `model` is present but not a string.
    #[error("\"model\" must be a string")]
    ModelNotString,
    /// `model` appears twice at the top level.
    #[error("duplicate top-level \"model\" key")]
    DuplicateModel,
}

fn malformed(what: &'static str, at: usize) -> SkimError {
    SkimError::Malformed { what, at }
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `i` points just after an opening quote; returns the index just after the closing quote and
/// whether the string contained a backslash escape.
#[inline]
fn skip_string(b: &[u8], mut i: usize) -> Result<(usize, bool), SkimError> {
    let mut escaped = false;
    loop {
        match memchr::memchr2(b'"', b'\\', &b[i..]) {
            None => return Err(malformed("unterminated string", b.len())),
            Some(off) => {
                let j = i + off;
                if b[j] == b'"' {
                    return Ok((j + 1, escaped));
                }
                escaped = true;
                i = j + 2;
                if i > b.len() {
                    return Err(malformed("unterminated string", b.len()));
                }
            }
        }
    }
}

/// Skips one JSON value starting at `i` (no leading whitespace); returns the index after it.
fn skip_value(b: &[u8], i: usize) -> Result<usize, SkimError> {
    match b.get(i) {
        None => Err(malformed("expected a value", i)),
        Some(b'"') => Ok(skip_string(b, i + 1)?.0),
        Some(b'{') | Some(b'[') => {
            // Balanced skip of a container; strings are skipped so brackets inside them don't count.
            let mut stack: Vec<u8> = Vec::new();
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j + 1)?.0;
                        continue;
                    }
                    c @ (b'{' | b'[') => stack.push(c),
                    b'}' if stack.pop() != Some(b'{') => {
                        return Err(malformed("mismatched '}'", j));
                    }
                    b']' if stack.pop() != Some(b'[') => {
                        return Err(malformed("mismatched ']'", j));
                    }
                    _ => {}
                }
                j += 1;
                if stack.is_empty() {
                    return Ok(j);
                }
            }
            Err(malformed("unterminated object or array", b.len()))
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'a'..=b'z' | b'0'..=b'9' | b'-' | b'+' | b'.' | b'E' => j += 1,
                    _ => break,
                }
            }
            if j == i {
                return Err(malformed("unexpected character", i));
            }
            let tok = &b[i..j];
            let first = tok[0];
            let ok = matches!(tok, b"true" | b"false" | b"null")
                || first == b'-'
                || first.is_ascii_digit();
            if !ok {
                return Err(malformed("invalid literal", i));
            }
            Ok(j)
        }
    }
}

/// Skims a request body: finds top-level `model` and `stream`, validating the overall structure.
pub fn skim(b: &[u8]) -> Result<Skimmed<'_>, SkimError> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(malformed("expected a JSON object", i));
    }
    i = skip_ws(b, i + 1);
    let mut out = Skimmed {
        model: None,
        model_span: 0..0,
        stream: false,
    };
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(malformed("expected a string key", i));
            }
            let key_start = i + 1;
            let (after_key, _) = skip_string(b, key_start)?;
            let key = &b[key_start..after_key - 1];
            i = skip_ws(b, after_key);
            if b.get(i) != Some(&b':') {
                return Err(malformed("expected ':'", i));
            }
            i = skip_ws(b, i + 1);
            let vstart = i;
            i = skip_value(b, i)?;
            match key {
                b"model" => {
                    if out.model.is_some() {
                        return Err(SkimError::DuplicateModel);
                    }
                    if &b[vstart..i] == b"null" {
                        // Treated as missing: the caller reports "missing model".
                    } else if b[vstart] != b'"' {
                        return Err(SkimError::ModelNotString);
                    } else {
                        let raw = &b[vstart + 1..i - 1];
                        let (_, escaped) = skip_string(b, vstart + 1)?;
                        let value = if escaped {
                            let s: String = serde_json::from_slice(&b[vstart..i])
                                .map_err(|_| malformed("invalid escape in model", vstart))?;
                            Cow::Owned(s)
                        } else {
                            Cow::Borrowed(
                                std::str::from_utf8(raw)
                                    .map_err(|_| malformed("model is not UTF-8", vstart))?,
                            )
                        };
                        out.model = Some(value);
                        out.model_span = vstart..i;
                    }
                }
                b"stream" => out.stream = &b[vstart..i] == b"true",
                _ => {}
            }
            continue_after(&mut i, b)?;
            if b[i - 1] == b'}' {
                break;
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(malformed(
            "trailing data after the JSON object",
            skip_ws(b, i),
        ));
    }
    Ok(out)
}

/// After a value: consume whitespace and a `,` (then whitespace) or the closing `}`.
fn continue_after(i: &mut usize, b: &[u8]) -> Result<(), SkimError> {
    let j = skip_ws(b, *i);
    match b.get(j) {
        Some(b',') => {
            *i = skip_ws(b, j + 1);
            Ok(())
        }
        Some(b'}') => {
            *i = j + 1;
            Ok(())
        }
        _ => Err(malformed("expected ',' or '}'", j)),
    }
}

/// Returns `body` with the bytes in `span` (a string literal) replaced by `new_model` as a JSON
/// string. Everything else is copied unchanged.
pub fn splice_model(body: &[u8], span: Range<usize>, new_model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + new_model.len() + 8);
    out.extend_from_slice(&body[..span.start]);
    if new_model
        .bytes()
        .all(|c| c >= 0x20 && c != b'"' && c != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(new_model.as_bytes());
        out.push(b'"');
    } else {
        // Rare: needs escaping. serde_json writes a valid JSON string.
        let _ = serde_json::to_writer(&mut out, new_model);
    }
    out.extend_from_slice(&body[span.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_model_and_stream() {
        let b = br#"{"messages":[{"role":"user","content":"hi \"model\": x}"}],"model":"sam-desktop/qwen","stream":true}"#;
        let s = skim(b).unwrap();
        assert_eq!(s.model.as_deref(), Some("sam-desktop/qwen"));
        assert!(s.stream);
        assert_eq!(&b[s.model_span.clone()], br#""sam-desktop/qwen""#);
        let out = splice_model(b, s.model_span, "qwen");
        assert_eq!(
            out,
            br#"{"messages":[{"role":"user","content":"hi \"model\": x}"}],"model":"qwen","stream":true}"#
        );
    }

    #[test]
    fn nested_model_is_ignored() {
        let b = br#"{"meta":{"model":"inner"},"x":[1,{"model":"y"}]}"#;
        assert_eq!(skim(b).unwrap().model, None);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"model\":\"a\"",
            b"{\"model\":\"a\",}",
            b"{\"model\" \"a\"}",
            b"{\"a\":[1,2}",
            b"{\"a\":1} x",
            b"{\"a\":\"unterminated}",
            b"{\"a\":nope}",
        ] {
            assert!(
                skim(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(skim(br#"{"model":5}"#), Err(SkimError::ModelNotString));
        assert_eq!(
            skim(br#"{"model":"a","model":"b"}"#),
            Err(SkimError::DuplicateModel)
        );
        assert_eq!(skim(br#"{"model":null,"a":1}"#).unwrap().model, None);
    }

    #[test]
    fn escaped_model_is_unescaped() {
        let s = skim(br#"{"model":"a\/b"}"#).unwrap();
        assert_eq!(s.model.as_deref(), Some("a/b"));
    }

    proptest! {
        /// For any serde_json-generated object, the skimmer agrees with serde_json on `model`
        /// and `stream`, and splicing yields JSON whose only change is `model`.
        #[test]
        fn agrees_with_serde(model in "[a-z0-9/_.:-]{1,40}", other in "\\PC{0,40}", stream in any::<bool>(),
                             n in 0usize..5, model_first in any::<bool>()) {
            let mut m = serde_json::Map::new();
            let arr: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({"model": other, "i": i, "s": [other.clone()]})).collect();
            if model_first { m.insert("model".into(), model.clone().into()); }
            m.insert("messages".into(), arr.into());
            m.insert("stream".into(), stream.into());
            m.insert("note".into(), other.clone().into());
            if !model_first { m.insert("model".into(), model.clone().into()); }
            let body = serde_json::to_vec_pretty(&serde_json::Value::Object(m.clone())).unwrap();
            let s = skim(&body).unwrap();
            prop_assert_eq!(s.model.as_deref(), Some(model.as_str()));
            prop_assert_eq!(s.stream, stream);
            let out = splice_model(&body, s.model_span, "wire-x");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            m.insert("model".into(), "wire-x".into());
            prop_assert_eq!(v, serde_json::Value::Object(m));
        }

        /// The skimmer never panics on arbitrary bytes.
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = skim(&b);
        }
    }
}
