//! # boocontrol
//!
//! One OpenAI-compatible endpoint over a fleet of llama.cpp / llama-swap hosts, plus a control
//! plane. This umbrella crate re-exports the member crates so that `examples/` and `benches/`
//! (and embedders who prefer a single dependency) can reach everything through one path.

pub use boo_bench as bench;
pub use boo_fleet_core as fleet_core;
pub use boo_fleet_sim as fleet_sim;
pub use boo_gateway_http as gateway_http;
pub use boo_model_ref as model_ref;
pub use boo_provider_registry as provider_registry;
pub use boo_routing as routing;
pub use boo_telemetry_store as telemetry_store;
