//! The crate's single error type and its HTTP mapping.

use crate::actions::Action;

/// Everything that can go wrong in `boo-fleet-core`.
///
/// Action rejections map to HTTP statuses through [`Error::http_status`]:
///
/// | variant | status | meaning |
/// | --- | --- | --- |
/// | [`Error::QueueFull`] | 429 | the host's action queue already holds its cap |
/// | [`Error::HostOffline`] | 503 | the host is `down` |
/// | [`Error::RequiresConfirmation`] | 409 | a bench holds the host; resubmit with confirmation |
/// | [`Error::UnknownHost`] | 404 | no such host in the fleet |
/// | [`Error::Wire`], [`Error::InvalidConfig`] | 400 / 500 | bad input or a bad configuration |
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wire payload could not be understood; names the field and the problem.
    #[error("invalid {what}: field `{field}`: {problem}")]
    Wire {
        /// Which payload was being parsed (e.g. "activity entry").
        what: &'static str,
        /// The JSON field (dotted path) at fault; `$` for the payload as a whole.
        field: String,
        /// What was wrong with it.
        problem: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: `{field}`: {problem}")]
    InvalidConfig {
        /// The option at fault.
        field: &'static str,
        /// What was wrong with it.
        problem: String,
    },
    /// The host's action queue is full; `queued` lists what is pending, oldest first.
    #[error("action queue for `{provider}` is full ({} queued: {})", queued.len(), list_actions(queued))]
    QueueFull {
        /// The host.
        provider: String,
        /// The actions already queued (running one first, if any), oldest first.
        queued: Vec<Action>,
    },
    /// The host is `down`; actions are refused until it reconnects.
    #[error("host `{provider}` is offline")]
    HostOffline {
        /// The host.
        provider: String,
    },
    /// A bench (or other lease holder) is using the host; the action needs explicit confirmation.
    #[error(
        "bench in progress on `{provider}` (held by `{holder}` for {purpose}): requires confirmation"
    )]
    RequiresConfirmation {
        /// The host.
        provider: String,
        /// Who holds the lease.
        holder: String,
        /// Why they hold it.
        purpose: String,
    },
    /// The host is not part of the fleet.
    #[error("unknown host `{provider}`")]
    UnknownHost {
        /// The host id that was asked for.
        provider: String,
    },
}

fn list_actions(actions: &[Action]) -> String {
    actions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// The HTTP status a control API should answer with (see the table on [`Error`]).
    pub fn http_status(&self) -> u16 {
        match self {
            Error::QueueFull { .. } => 429,
            Error::HostOffline { .. } => 503,
            Error::RequiresConfirmation { .. } => 409,
            Error::UnknownHost { .. } => 404,
            Error::Wire { .. } => 400,
            Error::InvalidConfig { .. } => 500,
        }
    }

    /// A JSON body for the control API.
    ///
    /// `RequiresConfirmation` gives `{"error":"bench in progress","requiresConfirmation":true,...}`,
    /// `QueueFull` adds `"queued":[...]` with the pending actions; every body has `"error"`.
    pub fn to_json_body(&self) -> serde_json::Value {
        match self {
            Error::RequiresConfirmation {
                provider,
                holder,
                purpose,
            } => serde_json::json!({
                "error": "bench in progress",
                "requiresConfirmation": true,
                "provider": provider,
                "holder": holder,
                "purpose": purpose,
            }),
            Error::QueueFull { provider, queued } => serde_json::json!({
                "error": self.to_string(),
                "provider": provider,
                "queued": queued,
            }),
            Error::HostOffline { provider } => serde_json::json!({
                "error": "host offline",
                "provider": provider,
            }),
            other => serde_json::json!({ "error": other.to_string() }),
        }
    }

    pub(crate) fn wire(
        what: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Error::Wire {
            what,
            field: field.into(),
            problem: problem.into(),
        }
    }
}
