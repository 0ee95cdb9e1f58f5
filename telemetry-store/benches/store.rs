//! Telemetry-store benchmarks (placeholder, replaced below).
fn main() {}
