//! Integration and property tests for boo-fleet-core.

mod backoff;
mod queue;
mod view;
