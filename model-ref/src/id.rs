//! Provider ids, composite model references, virtual models and their parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelRefError;

/// Longest accepted model id, in bytes (the whole string, provider prefix included).
pub const MAX_MODEL_ID_BYTES: usize = 512;
/// Longest accepted provider id, in characters.
pub const MAX_PROVIDER_ID_LEN: usize = 64;

/// A provider id: 1–64 chars of `[a-z0-9_-]`, starting with a letter or digit.
///
/// ```
/// use boo_model_ref::ProviderId;
/// assert_eq!(ProviderId::new("sam-desktop").unwrap().as_str(), "sam-desktop");
/// assert!(ProviderId::new("Sam").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(String);

impl ProviderId {
    /// Validates and wraps a provider id.
    ///
    /// # Errors
    /// [`ModelRefError::InvalidProviderId`] naming the broken rule.
    pub fn new(s: &str) -> Result<Self, ModelRefError> {
        check_name(s).map_err(|reason| ModelRefError::InvalidProviderId {
            input: s.to_owned(),
            reason,
        })?;
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shared rule for provider ids and policy names.
fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_PROVIDER_ID_LEN {
        return Err("must be at most 64 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("only lowercase ASCII letters, digits, '-' and '_' are allowed");
    }
    if !s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err("must start with a letter or digit");
    }
    Ok(())
}

impl FromStr for ProviderId {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProviderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for ProviderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A composite model reference, `provider/model`.
///
/// The string splits at the **first** `/`; the model part keeps any further `/` and `:`.
///
/// ```
/// use boo_model_ref::ModelRef;
/// let r: ModelRef = "sam-desktop/org/Qwen3-8B:Q4_K_M".parse().unwrap();
/// assert_eq!(r.provider.as_str(), "sam-desktop");
/// assert_eq!(r.model, "org/Qwen3-8B:Q4_K_M");
/// assert_eq!(r.to_string(), "sam-desktop/org/Qwen3-8B:Q4_K_M");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelRef {
    /// The provider that serves the model.
    pub provider: ProviderId,
    /// The wire model id, as the provider knows it (sent upstream unchanged).
    pub model: String,
}

impl ModelRef {
    /// Builds a reference, checking the model part.
    ///
    /// # Errors
    /// The model part is empty, holds whitespace/control characters, or the composite string
    /// would exceed [`MAX_MODEL_ID_BYTES`].
    pub fn new(provider: ProviderId, model: impl Into<String>) -> Result<Self, ModelRefError> {
        let model = model.into();
        let whole = format!("{provider}/{model}");
        check_common(&whole)?;
        if model.is_empty() {
            return Err(ModelRefError::EmptySide {
                input: whole,
                side: "model",
            });
        }
        Ok(Self { provider, model })
    }
}

impl FromStr for ModelRef {
    type Err = ModelRefError;
    /// Syntactic parse: any first segment that is a valid [`ProviderId`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_common(s)?;
        let Some((p, m)) = s.split_once('/') else {
            return Err(ModelRefError::NotComposite {
                input: s.to_owned(),
            });
        };
        check_sides(s, p, m)?;
        let provider = ProviderId::new(p)?;
        Ok(Self {
            provider,
            model: m.to_owned(),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.provider.as_str())?;
        f.write_str("/")?;
        f.write_str(&self.model)
    }
}

impl Serialize for ModelRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Joined by hand: the routing log serializes several ids per request, and the
        // formatting machinery costs several times a plain copy.
        let (p, m) = (self.provider.as_str(), self.model.as_str());
        let mut id = String::with_capacity(p.len() + 1 + m.len());
        id.push_str(p);
        id.push('/');
        id.push_str(m);
        s.serialize_str(&id)
    }
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A virtual model: `auto` or `auto:<policy>`, routed by policies rather than to one provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualModel {
    policy: Option<String>,
}

impl VirtualModel {
    /// The bare `auto` model (default policy).
    pub fn auto() -> Self {
        Self { policy: None }
    }

    /// `auto:<policy>`.
    ///
    /// # Errors
    /// [`ModelRefError::InvalidPolicy`] unless the policy is 1–64 of `[a-z0-9_-]`.
    pub fn with_policy(policy: &str) -> Result<Self, ModelRefError> {
        check_name(policy).map_err(|_| ModelRefError::InvalidPolicy {
            input: format!("auto:{policy}"),
        })?;
        Ok(Self {
            policy: Some(policy.to_owned()),
        })
    }

    /// The policy name, `None` for plain `auto`.
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// The model name as clients write it: `"auto"` or `"auto:code"`.
    pub fn name(&self) -> String {
        match &self.policy {
            None => "auto".to_owned(),
            Some(p) => format!("auto:{p}"),
        }
    }
}

impl fmt::Display for VirtualModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Any model string a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelId {
    /// `provider/model` whose first segment is a syntactically valid provider id.
    Composite(ModelRef),
    /// A legacy bare id (may contain `/` when the first segment is not a valid provider id).
    Bare(String),
    /// `auto` or `auto:<policy>`.
    Virtual(VirtualModel),
}

impl ModelId {
    /// Parses a client model string.
    ///
    /// `"auto"`/`"auto:x"` → [`ModelId::Virtual`]; a `/` whose first segment is a valid
    /// [`ProviderId`] → [`ModelId::Composite`]; anything else → [`ModelId::Bare`].
    ///
    /// # Errors
    /// Empty input, whitespace or control characters, more than [`MAX_MODEL_ID_BYTES`] bytes,
    /// an empty side of the first `/`, or a malformed `auto:` policy.
    ///
    /// ```
    /// use boo_model_ref::ModelId;
    /// assert!(matches!(ModelId::parse("embedding/bge-m3"), Ok(ModelId::Composite(_))));
    /// assert!(matches!(ModelId::parse("Org/Model"), Ok(ModelId::Bare(_))));
    /// assert!(matches!(ModelId::parse("auto:code"), Ok(ModelId::Virtual(_))));
    /// assert!(ModelId::parse("local/").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<ModelId, ModelRefError> {
        check_common(s)?;
        if s == "auto" {
            return Ok(ModelId::Virtual(VirtualModel::auto()));
        }
        if let Some(policy) = s.strip_prefix("auto:") {
            return VirtualModel::with_policy(policy).map(ModelId::Virtual);
        }
        if let Some((p, m)) = s.split_once('/') {
            check_sides(s, p, m)?;
            if let Ok(provider) = ProviderId::new(p) {
                return Ok(ModelId::Composite(ModelRef {
                    provider,
                    model: m.to_owned(),
                }));
            }
        }
        Ok(ModelId::Bare(s.to_owned()))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelId::Composite(r) => r.fmt(f),
            ModelId::Bare(s) => f.write_str(s),
            ModelId::Virtual(v) => v.fmt(f),
        }
    }
}

impl FromStr for ModelId {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_common(s: &str) -> Result<(), ModelRefError> {
    if s.is_empty() {
        return Err(ModelRefError::Empty);
    }
    if s.len() > MAX_MODEL_ID_BYTES {
        return Err(ModelRefError::TooLong {
            len: s.len(),
            max: MAX_MODEL_ID_BYTES,
        });
    }
    if let Some((at, _)) = s
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(ModelRefError::InvalidChar {
            input: s.to_owned(),
            at,
        });
    }
    Ok(())
}

fn check_sides(s: &str, p: &str, m: &str) -> Result<(), ModelRefError> {
    if p.is_empty() {
        return Err(ModelRefError::EmptySide {
            input: s.to_owned(),
            side: "provider",
        });
    }
    if m.is_empty() {
        return Err(ModelRefError::EmptySide {
            input: s.to_owned(),
            side: "model",
        });
    }
    Ok(())
}

/// Presentation-only label: strips a `provider/` prefix and a `.gguf` suffix.
///
/// Never use the result for routing or cache keys.
///
/// ```
/// use boo_model_ref::display_label;
/// assert_eq!(display_label("sam-desktop/Qwen3-8B-Q4_K_M.gguf"), "Qwen3-8B-Q4_K_M");
/// assert_eq!(display_label("bge-m3"), "bge-m3");
/// ```
pub fn display_label(model: &str) -> String {
    let rest = match model.split_once('/') {
        Some((p, m)) if !m.is_empty() && ProviderId::new(p).is_ok() => m,
        _ => model,
    };
    let n = rest.len();
    let trimmed =
        if n > 5 && rest.is_char_boundary(n - 5) && rest[n - 5..].eq_ignore_ascii_case(".gguf") {
            &rest[..n - 5]
        } else {
            rest
        };
    trimmed.to_owned()
}
