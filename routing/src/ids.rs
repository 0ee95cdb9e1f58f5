//! Temporary stand-ins for `boo_model_ref` types until that crate lands (same names and shapes).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Provider id (`[a-z0-9_-]{1,64}`, first char letter/digit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderId(String);

/// Parse error for ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelRefError(String);

impl ProviderId {
    /// Validates and wraps a provider id.
    pub fn new(s: &str) -> Result<Self, ModelRefError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        if ok { Ok(Self(s.to_owned())) } else { Err(ModelRefError(format!("invalid provider id {s:?}"))) }
    }
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ProviderId {
    type Error = ModelRefError;
    fn try_from(s: String) -> Result<Self, ModelRefError> {
        Self::new(&s)
    }
}
impl From<ProviderId> for String {
    fn from(p: ProviderId) -> String {
        p.0
    }
}
impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for ProviderId {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, ModelRefError> {
        Self::new(s)
    }
}

/// Composite model id `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    /// Provider part.
    pub provider: ProviderId,
    /// Model part (wire id).
    pub model: String,
}
impl ModelRef {
    /// Builds a composite id.
    pub fn new(provider: ProviderId, model: impl Into<String>) -> Result<Self, ModelRefError> {
        let model = model.into();
        if model.is_empty() {
            return Err(ModelRefError("empty model".into()));
        }
        Ok(Self { provider, model })
    }
}
impl FromStr for ModelRef {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, ModelRefError> {
        let (p, m) = s.split_once('/').ok_or_else(|| ModelRefError(format!("{s:?} has no '/'")))?;
        Self::new(ProviderId::new(p)?, m)
    }
}
impl TryFrom<String> for ModelRef {
    type Error = ModelRefError;
    fn try_from(s: String) -> Result<Self, ModelRefError> {
        s.parse()
    }
}
impl From<ModelRef> for String {
    fn from(m: ModelRef) -> String {
        m.to_string()
    }
}
impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Model load state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadState {
    /// Loaded.
    Ready,
    /// Loading.
    Starting,
    /// Unloading.
    Stopping,
    /// Not loaded.
    Stopped,
    /// Failed.
    Error,
    /// Not known.
    Unknown,
}
