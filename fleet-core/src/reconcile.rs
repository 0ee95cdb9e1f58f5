//! Reconciling activity after a (re)connect: deduplication and gap detection.
//!
//! On every (re)connect a connector fetches the host's activity (legacy: the whole
//! `/api/metrics` ring; current: `/api/metrics/activity?min_id=<newest stored id>`, inclusive, so
//! the batch overlaps what is stored by one row) and stores it with `ON CONFLICT DO NOTHING`.
//! [`reconcile`] drops rows already seen (key: provider, upstream id, timestamp) and flags a
//! suspected gap: when the **oldest** row of the batch is newer than the **newest** stored row for
//! that host, rows in between were lost (the ring rolled over, or the host restarted).

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::ActivityEntry;
use crate::{Change, Delta};

/// The identity of an activity row across reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActivityKey {
    /// The host.
    pub provider: String,
    /// The host's row id (not unique on its own: legacy ids restart at 0).
    pub upstream_id: u64,
    /// The row's timestamp (ms).
    pub ts_ms: u64,
}

impl ActivityKey {
    /// The key of `entry` on `provider`.
    pub fn of(provider: &str, entry: &ActivityEntry) -> Self {
        ActivityKey {
            provider: provider.to_owned(),
            upstream_id: entry.id,
            ts_ms: entry.ts_ms,
        }
    }
}

/// A bounded memory of recently seen activity keys (oldest forgotten first).
#[derive(Debug, Clone)]
pub struct Dedup {
    cap: usize,
    seen: HashSet<ActivityKey>,
    order: VecDeque<ActivityKey>,
}

impl Dedup {
    /// Remembers up to `cap` keys (at least 1). A legacy ring holds 1,000 rows by default, so a
    /// cap of a few thousand per host suffices; the store's unique key is the final guard.
    pub fn new(cap: usize) -> Self {
        Dedup {
            cap: cap.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `key`; `true` when it was not seen before.
    pub fn insert(&mut self, key: ActivityKey) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Evidence that activity rows were lost between two reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapSuspected {
    /// The host.
    pub provider: String,
    /// Newest row stored before this batch (ms).
    pub newest_stored_ts_ms: u64,
    /// Oldest row of the batch (ms).
    pub oldest_batch_ts_ms: u64,
}

impl GapSuspected {
    /// The model event to store: model `*`, state `gap_suspected`, at the oldest batch time (so
    /// reconciling the same batch twice yields the same row), both timestamps in `detail`.
    pub fn to_model_event(&self) -> ModelEvent {
        ModelEvent {
            provider: self.provider.clone(),
            model: "*".to_owned(),
            state: "gap_suspected".to_owned(),
            ts_ms: self.oldest_batch_ts_ms,
            detail: serde_json::json!({
                "newest_stored_ts": crate::time::format_rfc3339_ms(self.newest_stored_ts_ms),
                "oldest_batch_ts": crate::time::format_rfc3339_ms(self.oldest_batch_ts_ms),
                "newest_stored_ts_ms": self.newest_stored_ts_ms,
                "oldest_batch_ts_ms": self.oldest_batch_ts_ms,
            }),
        }
    }
}

/// A row for the model-event log (`provider, model, state, ts, detail`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEvent {
    /// The host.
    pub provider: String,
    /// Wire model id, or `*` for host-wide events.
    pub model: String,
    /// A model state name, or an event name such as `gap_suspected`.
    pub state: String,
    /// When (ms since epoch).
    pub ts_ms: u64,
    /// Extra data.
    pub detail: Value,
}

impl ModelEvent {
    /// The model event a fleet delta implies, if any (model state changes only; TTL or last-use
    /// updates that keep the state are not events).
    pub fn from_delta(delta: &Delta) -> Option<ModelEvent> {
        match &delta.change {
            Change::Model { model, status } => Some(ModelEvent {
                provider: delta.provider.clone(),
                model: model.clone(),
                state: status.state.as_str().to_owned(),
                ts_ms: status.since,
                detail: Value::Null,
            }),
            _ => None,
        }
    }
}

/// Whether `batch` suggests lost rows: its oldest row is strictly newer than `newest_stored_ts_ms`.
/// No stored rows (fresh install) or an empty batch is never a gap.
pub fn detect_gap(
    provider: &str,
    batch: &[ActivityEntry],
    newest_stored_ts_ms: Option<u64>,
) -> Option<GapSuspected> {
    let stored = newest_stored_ts_ms?;
    let oldest = batch.iter().map(|e| e.ts_ms).min()?;
    (oldest > stored).then(|| GapSuspected {
        provider: provider.to_owned(),
        newest_stored_ts_ms: stored,
        oldest_batch_ts_ms: oldest,
    })
}

/// The outcome of [`reconcile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// Rows not seen before, in batch order: store these.
    pub fresh: Vec<ActivityEntry>,
    /// Rows dropped as already seen (in an earlier batch or twice in this one).
    pub duplicates: usize,
    /// Set when rows were probably lost before this batch.
    pub gap: Option<GapSuspected>,
}

/// Deduplicates a reconcile batch against `dedup` and checks it for a gap against the newest
/// stored timestamp for the host.
///
/// # Example
/// ```
/// use boo_fleet_core::reconcile::{reconcile, Dedup};
/// use boo_fleet_core::wire::parse_activity_list;
/// let batch = parse_activity_list(r#"[
///   {"id":0,"timestamp":"2026-05-01T10:00:00Z","model":"m"},
///   {"id":1,"timestamp":"2026-05-01T10:00:05Z","model":"m"}]"#).unwrap();
/// let mut dedup = Dedup::new(4_096);
/// let stored = Some(batch[0].ts_ms - 60_000); // the host restarted: its ring starts after our newest row
/// let r = reconcile("gpu", batch.clone(), stored, &mut dedup);
/// assert_eq!((r.fresh.len(), r.duplicates), (2, 0));
/// assert_eq!(r.gap.unwrap().to_model_event().model, "*");
/// let again = reconcile("gpu", batch, Some(r.fresh[1].ts_ms), &mut dedup);
/// assert_eq!((again.fresh.len(), again.duplicates, again.gap), (0, 2, None));
/// ```
pub fn reconcile(
    provider: &str,
    batch: Vec<ActivityEntry>,
    newest_stored_ts_ms: Option<u64>,
    dedup: &mut Dedup,
) -> Reconciled {
    let gap = detect_gap(provider, &batch, newest_stored_ts_ms);
    let mut fresh = Vec::with_capacity(batch.len());
    let mut duplicates = 0;
    for e in batch {
        if dedup.insert(ActivityKey::of(provider, &e)) {
            fresh.push(e);
        } else {
            duplicates += 1;
        }
    }
    Reconciled {
        fresh,
        duplicates,
        gap,
    }
}

#[cfg(test)]
mod tests;
