//! Lanes: local hosts run batch work serially, cloud providers in parallel within a budget.
//!
//! ADR (carried over from the original project's arena, seed README): a llama-backed host has
//! one GPU and swaps models, so two batch jobs on it at once would distort each other's timings
//! and may force swaps; work against local hosts therefore runs **one job at a time per host**.
//! Cloud APIs scale out, so work against them runs **in parallel up to a per-provider budget**
//! (the provider's `max_concurrency`, else a default). Bench, evals and comparisons admit every
//! job through [`Lanes`]; none of them implements its own concurrency rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a provider's work runs. Serialized in lowercase, like the registry's lane field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A local llama-swap / llama-server host: serial.
    Local,
    /// A cloud API: parallel within a budget.
    Cloud,
}

impl Lane {
    /// How many jobs may run at once on one provider of this lane (`budget` applies to `Cloud`
    /// only and is at least 1).
    pub fn max_parallel(self, budget: u32) -> u32 {
        match self {
            Lane::Local => 1,
            Lane::Cloud => budget.max(1),
        }
    }
}

/// Admission control for batch jobs, per provider.
///
/// # Example
/// ```
/// use boo_fleet_core::{Lane, Lanes};
/// let mut lanes = Lanes::new(4);
/// assert!(lanes.try_start("gpu-box", Lane::Local, None));
/// assert!(!lanes.try_start("gpu-box", Lane::Local, None)); // serial
/// for _ in 0..3 { assert!(lanes.try_start("openai", Lane::Cloud, Some(3))); }
/// assert!(!lanes.try_start("openai", Lane::Cloud, Some(3))); // budget reached
/// lanes.finish("gpu-box");
/// assert!(lanes.try_start("gpu-box", Lane::Local, None));
/// ```
#[derive(Debug, Clone)]
pub struct Lanes {
    default_cloud_budget: u32,
    running: BTreeMap<String, u32>,
}

impl Lanes {
    /// Cloud providers without their own budget get `default_cloud_budget` parallel jobs.
    pub fn new(default_cloud_budget: u32) -> Self {
        Lanes {
            default_cloud_budget: default_cloud_budget.max(1),
            running: BTreeMap::new(),
        }
    }

    /// Starts a job on `provider` if its lane allows another one; `budget` is the provider's own
    /// cloud budget (`max_concurrency`), if configured.
    pub fn try_start(&mut self, provider: &str, lane: Lane, budget: Option<u32>) -> bool {
        let limit = lane.max_parallel(budget.unwrap_or(self.default_cloud_budget));
        let n = self.running.entry(provider.to_owned()).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Ends one job on `provider`.
    pub fn finish(&mut self, provider: &str) {
        if let Some(n) = self.running.get_mut(provider) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(provider);
            }
        }
    }

    /// Jobs running on `provider`.
    pub fn running(&self, provider: &str) -> u32 {
        self.running.get(provider).copied().unwrap_or(0)
    }
}
