//! Advisory scores per (provider, model) for pickers and the `best_score` strategy.
//!
//! A score is 0–100 and combines three components, each 0–1:
//! * **health**: host liveness (connected 1, unknown 0.6, reconnecting 0.2, down 0) times
//!   model readiness (ready 1, starting 0.8, unknown 0.8, stopped or stopping 0.6, error 0);
//!   cloud models count as ready;
//! * **speed**: measured generation tok/s mapped through `t / (t + 30)` (30 tok/s → 0.5),
//!   blended 80/20 with prompt tok/s through `p / (p + 500)`; unmeasured → 0.5 (neutral);
//! * **quality**: an eval result 0–1 when one is known (the evals engine fills it later).
//!
//! Weights: health 0.5, speed 0.3, quality 0.2; without a quality figure health and speed
//! share the weight 5:3. A host that is down or a model in error scores 0 whatever its speed.

use crate::facts::{CandidateFacts, FleetFacts, Lane, Liveness, sane};
use crate::{LoadState, ModelRef};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One row of `GET /api/routing/scores`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// Composite id.
    pub model: Arc<ModelRef>,
    /// Provider part of the id (convenience for grouping).
    pub provider: String,
    /// Overall advisory score, 0–100.
    pub score: f64,
    /// Health component, 0–1.
    pub health: f64,
    /// Speed component, 0–1.
    pub speed: f64,
    /// Quality component, 0–1, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
}

fn liveness_factor(l: Liveness) -> f64 {
    match l {
        Liveness::Connected => 1.0,
        Liveness::Unknown => 0.6,
        Liveness::Reconnecting => 0.2,
        Liveness::Down => 0.0,
    }
}

fn state_factor(s: LoadState, lane: Lane) -> f64 {
    if lane == Lane::Cloud && s == LoadState::Unknown {
        return 1.0;
    }
    match s {
        LoadState::Ready => 1.0,
        LoadState::Starting | LoadState::Unknown => 0.8,
        LoadState::Stopped | LoadState::Stopping => 0.6,
        LoadState::Error => 0.0,
    }
}

/// Scores one candidate; `quality` is an eval figure in 0–1 (clamped), if any.
pub fn advisory_score(c: &CandidateFacts, quality: Option<f64>) -> ScoreRow {
    let health = liveness_factor(c.liveness) * state_factor(c.state, c.lane);
    let gen_part = sane(c.gen_tps).map(|t| t / (t + 30.0));
    let prompt_part = sane(c.prompt_tps).map(|p| p / (p + 500.0));
    let speed = match (gen_part, prompt_part) {
        (Some(g), Some(p)) => 0.8 * g + 0.2 * p,
        (Some(g), None) => g,
        (None, Some(p)) => 0.5 * 0.8 + 0.2 * p,
        (None, None) => 0.5,
    };
    let quality = sane(quality).map(|q| q.min(1.0));
    let raw = match quality {
        Some(q) => 0.5 * health + 0.3 * speed + 0.2 * q,
        None => (0.5 * health + 0.3 * speed) / 0.8,
    };
    let score = if health == 0.0 {
        0.0
    } else {
        (raw * 100.0).clamp(0.0, 100.0)
    };
    ScoreRow {
        model: c.model.clone(),
        provider: c.model.provider.to_string(),
        score,
        health,
        speed,
        quality,
    }
}

/// Scores every model of the fleet view, best first (ties by composite id).
/// `quality` looks up an eval figure per model.
pub fn advisory_scores<F, Q>(fleet: &F, quality: Q) -> Vec<ScoreRow>
where
    F: FleetFacts + ?Sized,
    Q: Fn(&ModelRef) -> Option<f64>,
{
    let mut rows: Vec<ScoreRow> = fleet
        .all()
        .iter()
        .map(|c| advisory_score(c, quality(&c.model)))
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.model.cmp(&b.model))
    });
    rows
}

#[cfg(test)]
mod tests;
