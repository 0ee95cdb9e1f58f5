//! boo-telemetry-store (work in progress).
