//! The gateway's one error enum and its single mapping to OpenAI-shaped HTTP responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Everything that can go wrong in the gateway, on the request path or at startup.
///
/// Every variant maps to exactly one HTTP status and OpenAI error `type`/`code` in
/// [`GatewayError::status`] and [`GatewayError::to_response`]; messages never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request body is not a JSON object (or is truncated / malformed).
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON body has no top-level `model` string.
    #[error("you must provide a model parameter (top-level \"model\" string)")]
    MissingModel,
    /// The `model` value is not a valid model id.
    #[error("invalid model id {model:?}: {reason}")]
    InvalidModel {
        /// The value the client sent.
        model: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The composite id names a provider that is not configured.
    #[error("model {model:?} not found: unknown provider {provider:?} (known providers: {known})")]
    UnknownProvider {
        /// The requested model.
        model: String,
        /// The provider segment.
        provider: String,
        /// Comma-separated configured providers.
        known: String,
    },
    /// The provider exists but is disabled (or an offline gateway-kind provider).
    #[error("provider {provider:?} is disabled or offline")]
    ProviderUnavailable {
        /// The provider id.
        provider: String,
    },
    /// A virtual `auto:*` model was requested but routing policies are not wired in yet.
    #[error(
        "virtual model {model:?} needs a routing policy, and auto:* routing is not configured on this gateway"
    )]
    VirtualNotConfigured {
        /// The virtual model name.
        model: String,
    },
    /// `X-Boo-Source` is present but not 1–64 token characters.
    #[error("invalid X-Boo-Source header: must be 1-64 characters of [A-Za-z0-9!#$%&'*+.^_`|~-]")]
    BadSource,
    /// The request body exceeds the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading the client body failed (client went away, bad framing).
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// Missing or wrong `Authorization: Bearer` key.
    #[error("invalid or missing API key (send Authorization: Bearer <key>)")]
    Unauthorized,
    /// No route for this path.
    #[error("unknown route {path}")]
    NotFound {
        /// The request path.
        path: String,
    },
    /// Route exists but not for this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The provider's concurrency limit and wait queue are full.
    #[error("provider {provider:?} is at its concurrency limit; retry later")]
    Overloaded {
        /// The provider id.
        provider: String,
        /// Seconds to put in `Retry-After`.
        retry_after_s: u32,
    },
    /// The upstream could not be reached (refused, DNS, TLS, reset before response).
    #[error("upstream provider {provider:?} is unreachable: {detail}")]
    UpstreamUnreachable {
        /// The provider id.
        provider: String,
        /// Transport error summary.
        detail: String,
    },
    /// The upstream did not send response headers within its first-byte timeout.
    #[error("upstream provider {provider:?} sent no response within {timeout_ms} ms")]
    UpstreamTimeout {
        /// The provider id.
        provider: String,
        /// The first-byte timeout in ms.
        timeout_ms: u64,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// Startup/configuration problem (bad base URL, bind failure, TLS setup…).
    #[error("gateway configuration error: {0}")]
    Config(String),
    /// I/O error at startup (bind, accept).
    #[error("gateway I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl GatewayError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            InvalidJson(_)
            | MissingModel
            | InvalidModel { .. }
            | UnknownProvider { .. }
            | BadSource => StatusCode::BAD_REQUEST,
            VirtualNotConfigured { .. } => StatusCode::NOT_IMPLEMENTED,
            ProviderUnavailable { .. } | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRead(_) => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotFound { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Config(_) | Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Unauthorized => "authentication_error",
            Overloaded { .. } => "rate_limit_error",
            UpstreamUnreachable { .. }
            | UpstreamTimeout { .. }
            | ProviderUnavailable { .. }
            | ShuttingDown => "server_error",
            Config(_) | Io(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI error `code` (also used as the telemetry `error_class`).
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            MissingModel => "missing_model",
            InvalidModel { .. } => "invalid_model",
            UnknownProvider { .. } => "model_not_found",
            ProviderUnavailable { .. } => "provider_unavailable",
            VirtualNotConfigured { .. } => "routing_not_configured",
            BadSource => "invalid_source",
            BodyTooLarge { .. } => "body_too_large",
            BodyRead(_) => "body_read_error",
            Unauthorized => "invalid_api_key",
            NotFound { .. } => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            Overloaded { .. } => "rate_limit_exceeded",
            UpstreamUnreachable { .. } => "upstream_unreachable",
            UpstreamTimeout { .. } => "upstream_timeout",
            ShuttingDown => "shutting_down",
            Config(_) => "config_error",
            Io(_) => "io_error",
        }
    }

    /// OpenAI error `param` (the offending request field, when there is one).
    pub fn param(&self) -> Option<&'static str> {
        use GatewayError::*;
        match self {
            MissingModel
            | InvalidModel { .. }
            | UnknownProvider { .. }
            | VirtualNotConfigured { .. } => Some("model"),
            BadSource => Some("x-boo-source"),
            _ => None,
        }
    }

    /// The OpenAI-shaped JSON body `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        let v = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// The full HTTP response for this error (the only place errors become responses).
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut resp = Response::new(B::from(self.body()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let GatewayError::Overloaded { retry_after_s, .. } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        if matches!(self, GatewayError::Unauthorized) {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_provider_is_openai_shaped_400() {
        let e = GatewayError::UnknownProvider {
            model: "nope/x".into(),
            provider: "nope".into(),
            known: "a, b".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    }

    #[test]
    fn overloaded_sets_retry_after() {
        let e = GatewayError::Overloaded {
            provider: "p".into(),
            retry_after_s: 2,
        };
        let r: Response<Bytes> = e.to_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
