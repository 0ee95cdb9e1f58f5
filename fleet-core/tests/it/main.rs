//! Integration and property tests for boo-fleet-core.

mod backoff;
mod purity;
mod queue;
mod sim;
mod view;
mod wire;
