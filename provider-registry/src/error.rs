//! Error and warning types of this crate.

use std::fmt;
use std::path::PathBuf;

use boo_model_ref::{ModelRefError, VirtualModel};

/// One validation problem, located by its JSON path (`$.providers[1].base_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the offending value or key.
    pub path: String,
    /// What is wrong, in words (never contains a secret value).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An explicitly named config file does not exist.
    #[error("config file {} does not exist", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{origin} is not valid JSON: {message} at line {line}, column {column}")]
    Syntax {
        /// Where the text came from (a path or "legacy environment").
        origin: String,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but is invalid; every problem found is listed.
    #[error("{}", format_problems(problems))]
    Invalid {
        /// All problems, in document order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The validation problems (empty for IO and syntax errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut s = format!(
        "invalid config: {} problem{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  - ");
        s.push_str(&p.to_string());
    }
    s
}

/// A non-fatal observation made while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A `{env:NAME}` reference named an unset variable; `""` was substituted.
    UnsetEnv {
        /// The variable name.
        var: String,
        /// JSON path of the string that referenced it.
        path: String,
    },
    /// Anything else worth telling the operator (fallbacks taken, defaults used).
    Note(String),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnsetEnv { var, path } => write!(
                f,
                "environment variable {var} is not set (referenced at {path}); using an empty string"
            ),
            Warning::Note(s) => f.write_str(s),
        }
    }
}

/// Why a model string could not be resolved to a provider endpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The model string itself is malformed.
    #[error("malformed model id: {0}")]
    Malformed(#[from] ModelRefError),
    /// `auto`/`auto:<policy>`: the caller must route it via policies.
    #[error("{0} is a virtual model: route it through a policy")]
    Virtual(VirtualModel),
    /// The first segment names no configured provider.
    #[error("unknown provider {provider:?}; known providers: {}", known.join(", "))]
    UnknownProvider {
        /// The provider segment as given.
        provider: String,
        /// Configured provider ids, in registry order.
        known: Vec<String>,
    },
    /// The provider exists but is disabled.
    #[error("provider {provider:?} is disabled")]
    ProviderDisabled {
        /// The provider id.
        provider: String,
    },
    /// A `gateway`-kind provider is disabled; requests never fall back to another host.
    #[error(
        "gateway provider {provider:?} is offline (disabled); not falling back to another host"
    )]
    GatewayOffline {
        /// The provider id.
        provider: String,
    },
}
