//! The crate's error type.

/// Everything that can go wrong in the telemetry store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL has a scheme we do not know.
    #[error("store url: unsupported scheme {scheme:?} (expected sqlite:// or postgres://)")]
    UnsupportedScheme {
        /// The scheme found (never the whole URL: it may hold a password).
        scheme: String,
    },
    /// A value handed to the store is invalid.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A JSON column could not be encoded or decoded.
    #[error("json column: {0}")]
    Json(#[from] serde_json::Error),
    /// The store is not reachable (used by wrappers and tests to simulate outages).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
