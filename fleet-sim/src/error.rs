//! The crate's error type.

/// Everything that can go wrong when starting hosts or reading a spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The spec is well-formed but a field has a bad value.
    #[error("invalid fleet spec: {field}: {problem}")]
    Spec {
        /// Dotted path of the field, e.g. `hosts[sam-desktop].models[0].n_ctx`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The spec text could not be parsed.
    #[error("could not parse fleet spec: {0}")]
    Parse(String),
    /// The listen address could not be bound.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}
