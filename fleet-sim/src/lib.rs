//! fleet-sim: a faithful emulator of llama-swap and llama-server hosts, for tests, demos and
//! benchmarks of boocontrol.
//!
//! Each [`SimHost`] listens on `127.0.0.1:0` (or a chosen address) and speaks the real wire
//! protocol described in `llama-swap-and-llama-server-api.md`:
//!
//! * **llama-swap** in two generations ([`ApiGen::Legacy`] = v235 and before, [`ApiGen::Current`]
//!   = v236+/v250, and [`ApiGen::Head`]), or an exact `version` such as `v235`: group swap, TTL
//!   unload, `/running`, `/upstream/<model>/...`, the unload APIs, `/api/events` with the real
//!   framing and on-connect sequence, activity rows (`/api/metrics` or `/api/metrics/activity` and
//!   `/api/metrics/stats`), captures, `/api/performance`, `/api/version`, `/health`, 429 with
//!   `Retry-After: 1` over the concurrency limit, and the version's error bodies.
//! * **llama-server**: `/health` (503 while loading), `/props`, `/slots`, `/metrics`, `/v1/models`,
//!   and the inference endpoints `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//!   streaming and not, with `usage` and `timings` that agree with each other.
//!
//! Every model has a speed model (prompt and generation tokens/s, load time, slots, `n_ctx`);
//! a host's `time_scale` shrinks all emulated durations so a "30 s load" takes 30 ms in a test.
//! Text is generated deterministically from a seed; `max_tokens`, `stop` and `ignore_eos` are honoured.
//!
//! What it does not do: run models, proxy to real servers, TLS, peers, profiles, selectors,
//! `/logs/stream`, `POST /api/inflight/{id}/cancel`, or rerank/audio/image endpoints (llama-swap
//! dispatches them; the emulated llama-server answers 404).
//!
//! # Scripting a fault in a test
//!
//! [`SimHost::faults`] returns a [`Faults`] handle; changes apply at once. [`SimHost::stats`]
//! shows what the host received, so a test can prove what the code under test sent.
//!
//! ```
//! use boo_fleet_sim::{client, start_host, ApiGen, HostSpec, ModelSpec};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // One llama-swap host; time_scale 0.001 turns the 5 s default load into 5 ms.
//! let host = start_host(
//!     HostSpec::llama_swap("gpu-1", ApiGen::Current, vec![ModelSpec::new("qwen")]).with_time_scale(0.001),
//! )
//! .await
//! .unwrap();
//! let url = host.base_url();
//! let chat = json!({"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
//!
//! // Every second inference request now fails with the upstream's 500.
//! host.faults().set_error_rate(0.5);
//! let a = client::post_json(&url, "/v1/chat/completions", &chat).await.unwrap();
//! let b = client::post_json(&url, "/v1/chat/completions", &chat).await.unwrap();
//! assert_eq!((a.status, b.status), (200, 500));
//! assert_eq!(b.json()["error"]["type"], "server_error");
//!
//! // Host down: connections are refused until it comes back.
//! host.faults().host_down().await;
//! assert!(client::get(&url, "/health").await.is_err());
//! host.faults().host_up().await;
//! assert_eq!(client::get(&url, "/health").await.unwrap().status, 200);
//!
//! // What did the host receive?
//! assert_eq!(host.stats().requests("/v1/chat/completions"), 2);
//! assert_eq!(host.stats().received_on("/v1/chat/completions")[0].model.as_deref(), Some("qwen"));
//! # }
//! ```
//!
//! Other faults: [`Faults::restart`] (activity ids, ring, captures and inflight ids reset),
//! [`Faults::hang`] / [`Faults::hang_for`] (no first byte), [`Faults::cut_stream_after`],
//! [`Faults::stall_stream`], [`Faults::slow_events`] with [`Faults::set_event_buffer`] (events
//! dropped on overflow), [`Faults::fail_load`] (500 `unspecific error`) and
//! [`Faults::fail_activity_api`] (`/api/metrics/activity` answers 500).
//!
//! # Fleets
//!
//! [`Fleet::start`] starts every host of a [`FleetSpec`] (YAML or JSON; see
//! `examples/fleet-demo.yaml`, also [`Fleet::demo_spec`]). The `sim-host` example runs a spec from
//! the command line and prints each host's URL.
//!
//! # Invariants
//!
//! * `usage.prompt_tokens = timings.prompt_n + timings.cache_n`, `usage.completion_tokens =
//!   timings.predicted_n`, and a stream carries exactly as many content deltas as `predicted_n`
//!   unless a stop word cut the last one.
//! * Activity ids count up from 1 (current) or 0 (legacy) and restart after [`Faults::restart`].
//! * Binds 127.0.0.1 unless the spec says otherwise.

mod activity;
mod body;
pub mod client;
mod error;
mod events;
mod faults;
mod fleet;
mod host;
mod router;
mod spec;
mod stats;
mod textgen;
mod wire;

pub use body::{BodyAborted, SimBody};
pub use error::SimError;
pub use faults::Faults;
pub use fleet::{DEMO_SPEC_YAML, Fleet};
pub use host::{SimHost, start_host};
pub use spec::{ApiGen, FleetSpec, GpuSpec, GroupSpec, HostSpec, Mode, ModelSpec};
pub use stats::{ReceivedRequest, Stats};
