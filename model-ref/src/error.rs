//! The error type of this crate.

/// Why a model string, provider id or model reference was rejected.
///
/// Every variant names the problem; the offending input is included where it helps
/// (model ids are not secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelRefError {
    /// The input was empty.
    #[error("model id is empty")]
    Empty,
    /// The input contains whitespace or a control character.
    #[error("model id {input:?} contains whitespace or a control character at byte {at}")]
    InvalidChar {
        /// The rejected input.
        input: String,
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// The input is longer than [`MAX_MODEL_ID_BYTES`](crate::MAX_MODEL_ID_BYTES).
    #[error("model id is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// One side of the first `/` is empty (`"/m"` or `"p/"`).
    #[error("model id {input:?} has an empty {side} side of the '/'")]
    EmptySide {
        /// The rejected input.
        input: String,
        /// `"provider"` or `"model"`.
        side: &'static str,
    },
    /// A provider id broke the `[a-z0-9_-]{1,64}` rule (first char a letter or digit).
    #[error("invalid provider id {input:?}: {reason}")]
    InvalidProviderId {
        /// The rejected input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A composite reference (`provider/model`) was required but the input has no `/`.
    #[error("{input:?} is not a composite model reference (expected \"provider/model\")")]
    NotComposite {
        /// The rejected input.
        input: String,
    },
    /// `auto:<policy>` with an empty or malformed policy name.
    #[error(
        "invalid virtual model {input:?}: the policy after \"auto:\" must be 1-64 of [a-z0-9_-]"
    )]
    InvalidPolicy {
        /// The rejected input.
        input: String,
    },
}
