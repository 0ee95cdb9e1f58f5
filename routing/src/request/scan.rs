//! [`PromptShape`] straight from body bytes: one pass of `serde_json` over the text that
//! counts characters as it goes and skips everything else, without building a
//! `serde_json::Value` tree. Bodies it does not fully understand (tool definitions, tool calls,
//! unexpected types, duplicate keys) come back as `None` and are measured through a `Value`,
//! so both ways always agree.

use super::PromptShape;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// `visit_*` methods for the listed scalar kinds (`str` ignores its text), each returning `$v`.
macro_rules! scalars {
    ($v:expr; $($kind:ident)*) => { $( scalars!(@one $v; $kind); )* };
    (@one $v:expr; str) => { fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { $v } };
    (@one $v:expr; bool) => { fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { $v } };
    (@one $v:expr; u64) => { fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { $v } };
    (@one $v:expr; i64) => { fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { $v } };
    (@one $v:expr; f64) => { fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { $v } };
    (@one $v:expr; unit) => { fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { $v } };
}

/// Measures `body`; `Ok(None)` when the `Value` route is needed for an exact answer.
///
/// # Errors
/// The body is not JSON (the same bodies `serde_json::from_slice::<Value>` rejects; the caller
/// reports the `Value` parser's error).
pub(super) fn shape(body: &[u8]) -> Result<Option<PromptShape>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = de.deserialize_any(Top)?;
    de.end()?;
    Ok(top)
}

/// Marker for "ask the `Value` route".
#[derive(Debug)]
struct Unsure;

/// Characters and images of one `content` (or `prompt`) value.
#[derive(Debug, Clone, Copy, Default)]
struct Content {
    chars: u64,
    images: u32,
}

fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Option<PromptShape>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = Seen::default();
        let mut unsure = false;
        let mut messages: Option<(u32, Content)> = None;
        let mut prompt = Content::default();
        let mut json_response = false;
        let mut max_completion: Option<u32> = None;
        let mut max_tokens: Option<u32> = None;
        while let Some(key) = map.next_key::<Key>()? {
            if !seen.first(key) {
                unsure = true;
            }
            match key {
                Key::Messages => match map.next_value_seed(Messages)? {
                    Ok(m) => messages = Some(m),
                    Err(Unsure) => unsure = true,
                },
                Key::Prompt => prompt = map.next_value_seed(ContentSeed)?,
                Key::Tools | Key::Functions | Key::ToolCalls => {
                    // Tool definitions count as their compact JSON text: the `Value` route.
                    map.next_value::<IgnoredAny>()?;
                    unsure = true;
                }
                Key::ResponseFormat => json_response = map.next_value_seed(ResponseFormat)?,
                Key::MaxCompletionTokens => max_completion = map.next_value_seed(MaxTokens)?,
                Key::MaxTokens => max_tokens = map.next_value_seed(MaxTokens)?,
                Key::Content | Key::Type | Key::Text | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if unsure {
            return Ok(None);
        }
        let mut s = PromptShape::default();
        if let Some((n, c)) = messages {
            s.messages = n;
            s.chars += c.chars;
            s.images = s.images.saturating_add(c.images);
        }
        s.chars += prompt.chars;
        s.images = s.images.saturating_add(prompt.images);
        s.json_response = json_response;
        s.max_tokens = max_completion.or(max_tokens);
        Ok(Some(s))
    }

    // Any other document measures as empty, as through a `Value`.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(PromptShape::default()))
    }
    scalars!(Ok(Some(PromptShape::default())); str bool u64 i64 f64 unit);
}

/// The keys the measurement reads, at any level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Messages,
    Prompt,
    Tools,
    Functions,
    ToolCalls,
    ResponseFormat,
    MaxCompletionTokens,
    MaxTokens,
    Content,
    Type,
    Text,
    Other,
}

impl Key {
    fn of(s: &str) -> Self {
        match s {
            "messages" => Self::Messages,
            "prompt" => Self::Prompt,
            "tools" => Self::Tools,
            "functions" => Self::Functions,
            "tool_calls" => Self::ToolCalls,
            "response_format" => Self::ResponseFormat,
            "max_completion_tokens" => Self::MaxCompletionTokens,
            "max_tokens" => Self::MaxTokens,
            "content" => Self::Content,
            "type" => Self::Type,
            "text" => Self::Text,
            _ => Self::Other,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key::of(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// Which read keys a map had already: a repeated one (a `Value` keeps the last) is left to
/// the `Value` route.
#[derive(Debug, Default)]
struct Seen(u16);

impl Seen {
    /// True the first time `k` is seen (other keys always).
    fn first(&mut self, k: Key) -> bool {
        if k == Key::Other {
            return true;
        }
        let bit = 1u16 << (k as u16);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// `messages`: how many, and their content totals; `Unsure` for anything but an array of
/// objects without `tool_calls`.
struct Messages;

impl<'de> DeserializeSeed<'de> for Messages {
    type Value = Result<(u32, Content), Unsure>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Messages {
    type Value = Result<(u32, Content), Unsure>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n: u32 = 0;
        let mut total = Content::default();
        let mut unsure = false;
        while let Some(m) = seq.next_element_seed(Message)? {
            n = n.saturating_add(1);
            match m {
                Ok(c) => {
                    total.chars += c.chars;
                    total.images = total.images.saturating_add(c.images);
                }
                Err(Unsure) => unsure = true,
            }
        }
        Ok(if unsure { Err(Unsure) } else { Ok((n, total)) })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(Unsure))
    }
    scalars!(Ok(Err(Unsure)); str bool u64 i64 f64 unit);
}

/// One chat message: its `content` totals; `Unsure` for a non-object, `tool_calls` or a
/// repeated key.
struct Message;

impl<'de> DeserializeSeed<'de> for Message {
    type Value = Result<Content, Unsure>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Message {
    type Value = Result<Content, Unsure>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = Seen::default();
        let mut unsure = false;
        let mut content = Content::default();
        while let Some(key) = map.next_key::<Key>()? {
            if !seen.first(key) {
                unsure = true;
            }
            match key {
                Key::Content => content = map.next_value_seed(ContentSeed)?,
                Key::ToolCalls => {
                    map.next_value::<IgnoredAny>()?;
                    unsure = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if unsure { Err(Unsure) } else { Ok(content) })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(Unsure))
    }
    scalars!(Ok(Err(Unsure)); str bool u64 i64 f64 unit);
}

/// A `content` or `prompt` value: a string counts its characters, an array its string parts
/// and `{"type", "text"}` parts (a `type` containing `image` counts an image); anything else
/// counts nothing.
struct ContentSeed;

impl<'de> DeserializeSeed<'de> for ContentSeed {
    type Value = Content;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ContentSeed {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("content")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
        Ok(Content {
            chars: chars(s),
            images: 0,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut c = Content::default();
        while let Some(p) = seq.next_element_seed(PartSeed)? {
            c.chars += p.chars;
            c.images = c.images.saturating_add(p.images);
        }
        Ok(c)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Content::default())
    }
    scalars!(Ok(Content::default()); bool u64 i64 f64 unit);
}

/// One part of an array `content`.
struct PartSeed;

impl<'de> DeserializeSeed<'de> for PartSeed {
    type Value = Content;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
        d.deserialize_any(self)
    }
}

/// A string field read through `f` (`None` when the value is not a string; a repeated key
/// keeps its last value, as in a `Value`).
struct StrWith<'a, T> {
    out: &'a mut Option<T>,
    f: fn(&str) -> T,
}

impl<'de, T> DeserializeSeed<'de> for StrWith<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T> Visitor<'de> for StrWith<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string field")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        *self.out = Some((self.f)(s));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        *self.out = None;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        *self.out = None;
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.out = None;
        Ok(())
    }
}

impl<'de> Visitor<'de> for PartSeed {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
        Ok(Content {
            chars: chars(s),
            images: 0,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        // `type` may come after `text`: both are held until the part ends.
        let mut image: Option<bool> = None;
        let mut text: Option<u64> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => map.next_value_seed(StrWith {
                    out: &mut image,
                    f: |t| t.contains("image"),
                })?,
                Key::Text => map.next_value_seed(StrWith {
                    out: &mut text,
                    f: chars,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if image == Some(true) {
            Content {
                chars: 0,
                images: 1,
            }
        } else {
            Content {
                chars: text.unwrap_or(0),
                images: 0,
            }
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Content::default())
    }
    scalars!(Ok(Content::default()); bool u64 i64 f64 unit);
}

/// `response_format`: true for an object whose `type` is `json_object` or `json_schema`.
struct ResponseFormat;

impl<'de> DeserializeSeed<'de> for ResponseFormat {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResponseFormat {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response_format")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut json: Option<bool> = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Type {
                map.next_value_seed(StrWith {
                    out: &mut json,
                    f: |t| t == "json_object" || t == "json_schema",
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(json == Some(true))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    scalars!(Ok(false); str bool u64 i64 f64 unit);
}

/// `max_tokens` / `max_completion_tokens`: a non-negative integer (saturated to `u32`), else
/// nothing.
struct MaxTokens;

impl<'de> DeserializeSeed<'de> for MaxTokens {
    type Value = Option<u32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MaxTokens {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("max_tokens")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<u32>, E> {
        Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<u32>, E> {
        Ok(u64::try_from(n)
            .ok()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<u32>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u32>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u32>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    scalars!(Ok(None); str bool unit);
}
