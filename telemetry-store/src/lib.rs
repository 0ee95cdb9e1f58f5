//! boo-telemetry-store: where boocontrol keeps requests, host activity, perf samples,
//! model events, settings and captures (work in progress: record types first).

mod records;

pub use records::*;
