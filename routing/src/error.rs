//! The crate's error type and validation problems.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One validation problem: where (a JSON path such as `policies[0].limits.max_attempts`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path of the offending value.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    /// Builds a problem.
    pub fn new(path: String, message: String) -> Self {
        Self { path, message }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Joined<'a>(&'a [Problem]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Errors of the routing core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// A policy failed validation; every problem is listed.
    #[error("invalid route policy: {}", Joined(.problems))]
    InvalidPolicy {
        /// All problems found.
        problems: Vec<Problem>,
    },
    /// No policy of that name is configured.
    #[error("no route policy named {name:?} (known: {})", .known.join(", "))]
    UnknownPolicy {
        /// The name asked for.
        name: String,
        /// Configured policy names.
        known: Vec<String>,
    },
    /// The failover machine was driven out of order (a gateway bug, not an upstream fault).
    #[error("failover: {event} is not valid while {state}")]
    IllegalTransition {
        /// What the caller reported.
        event: &'static str,
        /// The machine's state at that time.
        state: &'static str,
    },
}
