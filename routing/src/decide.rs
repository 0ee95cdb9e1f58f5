//! Computing a [`Decision`]: expand candidates, filter, order, cap.

use crate::facts::{CandidateFacts, FleetFacts, Lane, Liveness, RequestFeatures, sane};
use crate::policy::{CandidateSpec, Limits, RoutePolicy, Strategy};
use crate::{LoadState, ModelRef};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Load time assumed for a cold model whose load was never measured, ms.
pub const DEFAULT_LOAD_MS: u64 = 30_000;
/// Output tokens assumed by `fastest` and `cheapest` when the request sets no `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 256;

/// Why a candidate ranks lower than its strategies alone would put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Demotions {
    /// Its host is reconnecting (ranked after all others).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconnecting: bool,
    /// Local queue wait estimate over the policy's `max_wait_ms` (spills to the next candidate).
    #[serde(default, skip_serializing_if = "is_false")]
    pub over_max_wait: bool,
    /// Its per-slot `n_ctx` is unknown (ranked after models known to fit).
    #[serde(default, skip_serializing_if = "is_false")]
    pub context_unknown: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Demotions {
    fn rank(self) -> u8 {
        (u8::from(self.reconnecting) << 2)
            | (u8::from(self.over_max_wait) << 1)
            | u8::from(self.context_unknown)
    }

    /// True when any demotion applies.
    pub fn any(self) -> bool {
        self.rank() != 0
    }
}

/// One planned attempt, with the facts that placed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The model to send the request to (a handle shared with the fleet facts; serialized as
    /// the composite id string).
    pub model: Arc<ModelRef>,
    /// Its lane.
    pub lane: Lane,
    /// Host liveness at decision time.
    pub liveness: Liveness,
    /// Model state at decision time.
    pub state: LoadState,
    /// Known per-slot context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u32>,
    /// The model is not loaded: the attempt starts with a model load.
    pub cold: bool,
    /// Measured load time when the model is cold or still starting, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_load_ms: Option<u64>,
    /// Queue wait estimate on its lane, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    /// Measured generation speed, tok/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_tps: Option<f64>,
    /// Advisory score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Demotions applied.
    #[serde(default, skip_serializing_if = "is_default_demotions")]
    pub demoted: Demotions,
}

fn is_default_demotions(d: &Demotions) -> bool {
    !d.any()
}

/// A model the capability filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Function calling.
    Tools,
    /// Image input.
    Vision,
}

/// Why a candidate is not among the attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The policy names it but the fleet view does not know it.
    NotInFleet,
    /// Its lane is not in the policy's `filters.lanes`.
    LaneExcluded {
        /// The candidate's lane.
        lane: Lane,
    },
    /// Its host is down.
    HostDown,
    /// The model is in state `error`.
    ModelError,
    /// The request needs a capability the model is known to lack.
    MissingCapability {
        /// Which one.
        capability: Capability,
    },
    /// Estimated prompt + `max_tokens` exceeds the model's per-slot `n_ctx`.
    ContextTooSmall {
        /// Tokens the request needs.
        need: u64,
        /// The model's per-slot context.
        n_ctx: u32,
    },
    /// The model is stopped and the policy forbids cold starts.
    ColdStartNotAllowed,
    /// Eligible, but ranked beyond the policy's `max_attempts`.
    OverAttemptLimit {
        /// The limit.
        max_attempts: u32,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInFleet => f.write_str("not in the fleet view"),
            Self::LaneExcluded { lane } => write!(f, "lane {lane} excluded by the policy"),
            Self::HostDown => f.write_str("host down"),
            Self::ModelError => f.write_str("model in error state"),
            Self::MissingCapability {
                capability: Capability::Tools,
            } => f.write_str("model does not support tools"),
            Self::MissingCapability {
                capability: Capability::Vision,
            } => f.write_str("model does not support images"),
            Self::ContextTooSmall { need, n_ctx } => {
                write!(f, "context too small (need {need} tokens, n_ctx {n_ctx})")
            }
            Self::ColdStartNotAllowed => {
                f.write_str("not loaded and the policy forbids cold starts")
            }
            Self::OverAttemptLimit { max_attempts } => {
                write!(f, "beyond max_attempts {max_attempts}")
            }
        }
    }
}

/// The ordered plan for one request to a virtual model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Policy name (`auto:code`).
    pub policy: String,
    /// Index of the rule that matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Tokens the request needs in one slot (estimated prompt + `max_tokens`).
    pub need_tokens: u64,
    /// The effective limits (the failover machine enforces them).
    pub limits: Limits,
    /// Attempts in order; the first is the choice.
    pub attempts: Vec<Attempt>,
    /// Every other candidate with the reason it was left out, in the order the policy names them.
    /// The ids are handles shared with the fleet facts (cheap to build with hundreds of
    /// candidates); serialized as `[composite, reason]` pairs.
    pub skipped: Vec<(Arc<ModelRef>, SkipReason)>,
}

impl Decision {
    /// The first attempt's model, if any candidate is eligible.
    pub fn chosen(&self) -> Option<&ModelRef> {
        self.attempts.first().map(|a| a.model.as_ref())
    }

    /// Compact summary for logs and the `x-boo-route` header: attempt ids in order, at most
    /// [`COMPACT_SKIPPED_MAX`] filtered-out candidates as `id=code`, and counts for the rest
    /// (so the header stays small with hundreds of candidates).
    pub fn compact(&self) -> CompactDecision {
        let mut skipped = Vec::new();
        let mut over_limit = 0;
        let mut more = 0;
        for (m, r) in &self.skipped {
            if matches!(r, SkipReason::OverAttemptLimit { .. }) {
                over_limit += 1;
            } else if skipped.len() < COMPACT_SKIPPED_MAX {
                skipped.push(format!("{m}={}", skip_code(r)));
            } else {
                more += 1;
            }
        }
        CompactDecision {
            policy: self.policy.clone(),
            rule: self.rule,
            attempts: self.attempts.iter().map(|a| a.model.to_string()).collect(),
            skipped,
            more_skipped: more,
            over_limit,
        }
    }

    /// The compact summary as one line of JSON restricted to visible ASCII (non-ASCII is
    /// `\u`-escaped), fit for an HTTP header value.
    pub fn header_value(&self) -> String {
        ascii_json(serde_json::to_string(&self.compact()).unwrap_or_default())
    }
}

/// Short code of a skip reason (used in the compact form).
pub fn skip_code(r: &SkipReason) -> &'static str {
    match r {
        SkipReason::NotInFleet => "unknown",
        SkipReason::LaneExcluded { .. } => "lane",
        SkipReason::HostDown => "down",
        SkipReason::ModelError => "error",
        SkipReason::MissingCapability {
            capability: Capability::Tools,
        } => "no_tools",
        SkipReason::MissingCapability {
            capability: Capability::Vision,
        } => "no_vision",
        SkipReason::ContextTooSmall { .. } => "ctx",
        SkipReason::ColdStartNotAllowed => "cold",
        SkipReason::OverAttemptLimit { .. } => "limit",
    }
}

/// Escapes every non-ASCII char of a JSON text as `\uXXXX` (surrogate pairs above the BMP).
fn ascii_json(s: String) -> String {
    if s.is_ascii() {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Filtered-out candidates listed by name in the compact form; the rest are counted.
pub const COMPACT_SKIPPED_MAX: usize = 16;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The compact form of a decision (see [`Decision::compact`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactDecision {
    /// Policy name.
    pub policy: String,
    /// Matched rule index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Composite ids in attempt order.
    pub attempts: Vec<String>,
    /// `composite=code` for filtered-out candidates (see [`skip_code`]), in policy order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Filtered-out candidates beyond [`COMPACT_SKIPPED_MAX`], counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_skipped: usize,
    /// Eligible candidates ranked beyond `max_attempts`, counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub over_limit: usize,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.policy)?;
        if let Some(r) = self.rule {
            write!(f, " (rule #{r})")?;
        }
        writeln!(
            f,
            ": {} attempt(s), {} skipped, request needs {} tokens",
            self.attempts.len(),
            self.skipped.len(),
            self.need_tokens
        )?;
        if self.attempts.is_empty() {
            writeln!(f, "  no eligible candidate")?;
        }
        for (i, a) in self.attempts.iter().enumerate() {
            write!(
                f,
                "  {}. {} [{}, host {}, {}",
                i + 1,
                a.model,
                a.lane,
                a.liveness,
                state_word(a.state)
            )?;
            match a.n_ctx {
                Some(n) => write!(f, ", n_ctx {n}")?,
                None => write!(f, ", n_ctx unknown")?,
            }
            if a.cold {
                match a.expected_load_ms {
                    Some(ms) => write!(f, ", cold start ~{ms} ms")?,
                    None => write!(f, ", cold start")?,
                }
            }
            if let Some(t) = a.gen_tps {
                write!(f, ", {t:.1} tok/s")?;
            }
            if let Some(q) = a.queue_wait_ms {
                write!(f, ", queue ~{q} ms")?;
            }
            if let Some(s) = a.score {
                write!(f, ", score {s:.0}")?;
            }
            f.write_str("]")?;
            let d = a.demoted;
            if d.reconnecting {
                f.write_str(" demoted: host reconnecting;")?;
            }
            if d.over_max_wait {
                f.write_str(" demoted: queue wait over max_wait;")?;
            }
            if d.context_unknown {
                f.write_str(" demoted: n_ctx unknown;")?;
            }
            writeln!(f)?;
        }
        for (m, r) in &self.skipped {
            writeln!(f, "  skipped {m}: {r}")?;
        }
        Ok(())
    }
}

fn state_word(s: LoadState) -> &'static str {
    match s {
        LoadState::Ready => "ready",
        LoadState::Starting => "starting",
        LoadState::Stopping => "stopping",
        LoadState::Stopped => "stopped",
        LoadState::Error => "error",
        LoadState::Unknown => "state unknown",
    }
}

const MAX_KEYS: usize = 10;

struct Ranked {
    demote: u8,
    keys: [f64; MAX_KEYS],
    prio: u32,
    idx: u32,
    demoted: Demotions,
}

fn cmp_ranked(a: &Ranked, b: &Ranked) -> Ordering {
    a.demote
        .cmp(&b.demote)
        .then_with(|| {
            for (x, y) in a.keys.iter().zip(b.keys.iter()) {
                match x.total_cmp(y) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            Ordering::Equal
        })
        .then(a.prio.cmp(&b.prio))
        .then(a.idx.cmp(&b.idx))
}

fn is_cold_state(s: LoadState) -> bool {
    matches!(s, LoadState::Stopped | LoadState::Stopping)
}

fn strategy_key(s: Strategy, c: &CandidateFacts, prio: u32, req: &RequestFeatures) -> [f64; 2] {
    let out_tokens = f64::from(req.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS));
    let prompt = f64::from(req.est_prompt_tokens);
    let load = c.load_ms.unwrap_or(DEFAULT_LOAD_MS) as f64;
    match s {
        Strategy::Priority => [f64::from(prio), 0.0],
        Strategy::PreferLoaded => {
            if c.lane == Lane::Cloud {
                return [0.0, 0.0];
            }
            match c.state {
                LoadState::Ready => [0.0, 0.0],
                LoadState::Starting => [1.0, load],
                LoadState::Unknown => [2.0, 0.0],
                _ => [3.0, load],
            }
        }
        Strategy::Fastest => match sane(c.gen_tps).filter(|t| *t > 0.0) {
            None => [1.0, 0.0],
            Some(g) => {
                let p = sane(c.prompt_tps)
                    .filter(|t| *t > 0.0)
                    .map_or(0.0, |p| prompt / p);
                [0.0, (p + out_tokens / g) * 1000.0]
            }
        },
        Strategy::BestScore => match sane(c.score) {
            Some(s) => [0.0, -s],
            None => [1.0, 0.0],
        },
        Strategy::Cheapest => {
            if c.lane == Lane::Local {
                return [0.0, 0.0];
            }
            match (sane(c.price_in_per_mtok), sane(c.price_out_per_mtok)) {
                (Some(i), Some(o)) => [1.0, (i * prompt + o * out_tokens) / 1_000_000.0],
                _ => [2.0, 0.0],
            }
        }
    }
}

fn filter(
    c: &CandidateFacts,
    req: &RequestFeatures,
    need: u64,
    eff: &crate::policy::Effective<'_>,
) -> Option<SkipReason> {
    if let Some(lanes) = &eff.filters.lanes
        && !lanes.contains(&c.lane)
    {
        return Some(SkipReason::LaneExcluded { lane: c.lane });
    }
    if c.liveness == Liveness::Down {
        return Some(SkipReason::HostDown);
    }
    if c.state == LoadState::Error {
        return Some(SkipReason::ModelError);
    }
    if req.needs_tools && c.capabilities.tools == Some(false) {
        return Some(SkipReason::MissingCapability {
            capability: Capability::Tools,
        });
    }
    if req.needs_vision && c.capabilities.vision == Some(false) {
        return Some(SkipReason::MissingCapability {
            capability: Capability::Vision,
        });
    }
    if let Some(n) = c.n_ctx
        && need > u64::from(n)
    {
        return Some(SkipReason::ContextTooSmall { need, n_ctx: n });
    }
    if !eff.limits.allow_cold_start && c.lane == Lane::Local && is_cold_state(c.state) {
        return Some(SkipReason::ColdStartNotAllowed);
    }
    None
}

/// A candidate left out, with its static priority so the explanation keeps policy order.
enum Left<'a> {
    Missing(&'a ModelRef),
    Filtered(u32, SkipReason),
}

/// Expands candidate specs into fleet indices (first position wins), filtering as it goes.
struct Expansion<'a> {
    all: &'a [CandidateFacts],
    seen: Vec<bool>,
    next_prio: u32,
    ranked: Vec<Ranked>,
    left: Vec<(u32, Left<'a>)>,
}

impl<'a> Expansion<'a> {
    fn prio(&mut self) -> u32 {
        let p = self.next_prio;
        self.next_prio = self.next_prio.saturating_add(1);
        p
    }

    fn missing(&mut self, m: &'a ModelRef) {
        if !self
            .left
            .iter()
            .any(|(_, l)| matches!(l, Left::Missing(x) if *x == m))
        {
            let p = self.prio();
            self.left.push((p, Left::Missing(m)));
        }
    }

    fn visit(
        &mut self,
        i: usize,
        req: &RequestFeatures,
        need: u64,
        eff: &crate::policy::Effective<'_>,
    ) {
        match self.seen.get_mut(i) {
            Some(s) if !*s => *s = true,
            _ => return,
        }
        let Some(c) = self.all.get(i) else { return };
        let prio = self.prio();
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(reason) = filter(c, req, need, eff) {
            self.left.push((prio, Left::Filtered(idx, reason)));
            return;
        }
        let demoted = Demotions {
            reconnecting: c.liveness == Liveness::Reconnecting,
            over_max_wait: c.lane == Lane::Local
                && matches!((eff.filters.max_wait_ms, c.queue_wait_ms), (Some(max), Some(q)) if q > max),
            context_unknown: c.n_ctx.is_none(),
        };
        let mut keys = [0.0; MAX_KEYS];
        let mut used = [false; 5];
        let mut k = 0;
        for &s in eff.order {
            let slot = s as usize;
            if used.get(slot).copied().unwrap_or(true) || k + 2 > MAX_KEYS {
                continue;
            }
            used[slot] = true;
            let [a, b] = strategy_key(s, c, prio, req);
            keys[k] = a;
            keys[k + 1] = b;
            k += 2;
        }
        self.ranked.push(Ranked {
            demote: demoted.rank(),
            keys,
            prio,
            idx,
            demoted,
        });
    }
}

/// Computes the decision for one request under `policy` over `fleet`.
///
/// Pure and deterministic: the same policy, request and fleet facts give the same decision.
/// Every candidate the policy names ends up either in `attempts` (best first) or in
/// `skipped` (in the order the policy names them).
pub fn decide<F: FleetFacts + ?Sized>(
    policy: &RoutePolicy,
    req: &RequestFeatures,
    fleet: &F,
) -> Decision {
    let eff = policy.effective(req);
    let all = fleet.all();
    let need = req.needed_tokens();

    let mut x = Expansion {
        all,
        seen: vec![false; all.len()],
        next_prio: 0,
        ranked: Vec::with_capacity(all.len().min(256)),
        left: Vec::with_capacity(all.len().min(256)),
    };
    for spec in eff.candidates {
        match spec {
            CandidateSpec::Model(m) => match fleet.position(m) {
                Some(i) => x.visit(i, req, need, &eff),
                None => x.missing(m),
            },
            CandidateSpec::Provider(p) => {
                for (i, c) in all.iter().enumerate() {
                    if &c.model.provider == p {
                        x.visit(i, req, need, &eff);
                    }
                }
            }
            CandidateSpec::Tag(t) => {
                for (i, c) in all.iter().enumerate() {
                    if c.has_tag(t) {
                        x.visit(i, req, need, &eff);
                    }
                }
            }
            CandidateSpec::All => {
                for i in 0..all.len() {
                    x.visit(i, req, need, &eff);
                }
            }
        }
    }
    let Expansion {
        mut ranked, left, ..
    } = x;

    // Only the best `max_attempts` need a full order: select them, sort them, and leave the
    // rest (explained as over the limit) in policy order.
    let max = eff.limits.max_attempts as usize;
    let mut over: Vec<(u32, u32)> = Vec::new();
    if ranked.len() > max {
        if max > 0 {
            ranked.select_nth_unstable_by(max - 1, cmp_ranked);
        }
        over.extend(ranked.drain(max..).map(|r| (r.prio, r.idx)));
        over.sort_unstable();
    }
    ranked.sort_unstable_by(cmp_ranked);

    let mut attempts = Vec::with_capacity(ranked.len());
    for r in &ranked {
        let Some(c) = all.get(r.idx as usize) else {
            continue;
        };
        let local = c.lane == Lane::Local;
        let cold = local && is_cold_state(c.state);
        attempts.push(Attempt {
            model: c.model.clone(),
            lane: c.lane,
            liveness: c.liveness,
            state: c.state,
            n_ctx: c.n_ctx,
            cold,
            expected_load_ms: if local && (cold || c.state == LoadState::Starting) {
                c.load_ms
            } else {
                None
            },
            queue_wait_ms: c.queue_wait_ms,
            gen_tps: sane(c.gen_tps),
            score: sane(c.score),
            demoted: r.demoted,
        });
    }

    // `left` is already in policy order; merge the over-limit ones back in.
    let over_reason = SkipReason::OverAttemptLimit {
        max_attempts: eff.limits.max_attempts,
    };
    let mut skipped = Vec::with_capacity(left.len() + over.len());
    let mut over = over.into_iter().peekable();
    let mut push_over_until = |prio: u32, skipped: &mut Vec<(Arc<ModelRef>, SkipReason)>| {
        while let Some((_, idx)) = over.next_if(|(p, _)| *p < prio || prio == u32::MAX) {
            if let Some(c) = all.get(idx as usize) {
                skipped.push((c.model.clone(), over_reason.clone()));
            }
        }
    };
    for (prio, l) in left {
        push_over_until(prio, &mut skipped);
        match l {
            Left::Missing(m) => skipped.push((Arc::new(m.clone()), SkipReason::NotInFleet)),
            Left::Filtered(idx, reason) => {
                if let Some(c) = all.get(idx as usize) {
                    skipped.push((c.model.clone(), reason));
                }
            }
        }
    }
    push_over_until(u32::MAX, &mut skipped);

    Decision {
        policy: policy.name.clone(),
        rule: eff.rule,
        need_tokens: need,
        limits: *eff.limits,
        attempts,
        skipped,
    }
}

#[cfg(test)]
mod tests;
