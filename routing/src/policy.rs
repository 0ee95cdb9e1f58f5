//! Route policies: what a virtual `auto:*` model means.
//!
//! A policy lives as one JSON object in the config file's `policies` array (or in the store).
//! Every field but `name` and `candidates` is optional:
//!
//! ```json
//! {
//!   "name": "auto:code",
//!   "description": "best code model that is up right now",
//!   "candidates": ["sam-desktop/qwen2.5-coder-32b", "tag:code", "sam-laptop/*", "openai/gpt-4.1-mini"],
//!   "order": ["prefer_loaded", "fastest"],
//!   "filters": { "max_wait_ms": 5000, "lanes": ["local", "cloud"] },
//!   "limits": { "max_attempts": 3, "total_deadline_ms": 120000, "first_byte_ms": 30000,
//!               "allow_cold_start": true },
//!   "rules": [
//!     { "when": { "needs_vision": true }, "candidates": ["tag:vision"] },
//!     { "when": { "min_prompt_tokens": 16000 }, "order": ["cheapest"],
//!       "limits": { "max_attempts": 2, "total_deadline_ms": 300000, "first_byte_ms": 120000,
//!                   "allow_cold_start": false } }
//!   ]
//! }
//! ```
//!
//! * `name`: `auto` or `auto:<name>` (`<name>` is 1–64 of `[a-z0-9_-]`); it is the model id
//!   clients ask for.
//! * `candidates`, in static priority order (first = preferred), each one of:
//!   `provider/model` (a composite id), `provider/*` (every model the provider serves),
//!   `tag:<tag>` (every model carrying that tag) or `*` (every known model).
//!   A selector expands in composite-id order; a model listed twice keeps its first position.
//! * `order`: ordering strategies applied lexicographically (the first decides, the next
//!   breaks ties): `priority` (position in `candidates`), `prefer_loaded` (ready, then
//!   starting, then unknown, then cold; cold ones by measured load time), `fastest`
//!   (estimated service time from measured prompt and generation tok/s; unmeasured last),
//!   `best_score` (advisory score, highest first; unscored last), `cheapest` (local before
//!   cloud, then estimated price of this request; unpriced cloud models last).
//!   Default: `["prefer_loaded"]`; `[]` means static priority only. Static priority then
//!   composite id always break remaining ties.
//! * `filters.max_wait_ms`: a **local** candidate whose queue wait estimate exceeds it is
//!   demoted behind every candidate that does not (it spills to the next one, e.g. to cloud).
//!   `filters.lanes`: only candidates in these lanes are eligible (default: both).
//! * `limits`: `max_attempts` (≥ 1, default 3), `total_deadline_ms` (default 120000),
//!   `first_byte_ms` (default 30000, at most the total deadline), `allow_cold_start`
//!   (default true; when false, stopped models are skipped).
//! * `rules`: the first rule whose `when` matches the request replaces the policy's
//!   `candidates`, `order`, `filters` and/or `limits` with its own (each field replaced whole).
//!   `when` fields (all optional, all must hold): `needs_tools`, `needs_vision`,
//!   `json_response` (booleans compared to the request), `min_prompt_tokens`,
//!   `max_prompt_tokens` (inclusive bounds on the estimate), `source` (list of
//!   `X-Boo-Source` values, any of which matches).
//!
//! Filters that are always on: hosts that are `down` and models in state `error` are skipped,
//! `reconnecting` hosts are ranked last, a model whose known per-slot `n_ctx` is smaller than
//! the estimated prompt plus `max_tokens` is skipped, and a model with unknown `n_ctx` is
//! allowed but ranked after every model known to fit. A model whose capabilities are known
//! to lack tools or vision is skipped when the request needs them.

use crate::error::{Problem, RoutingError};
use crate::facts::{Lane, RequestFeatures};
use crate::{ModelRef, ProviderId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A virtual model: how to pick and fail over between candidate models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct RoutePolicy {
    /// `auto` or `auto:<name>`: the model id clients ask for.
    pub name: String,
    /// Human description shown in model lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Request-dependent overrides; the first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Candidate models and selectors in static priority order.
    pub candidates: Vec<CandidateSpec>,
    /// Ordering strategies, applied lexicographically.
    pub order: Vec<Strategy>,
    /// Optional filters.
    pub filters: Filters,
    /// Attempt and time limits.
    pub limits: Limits,
}

/// A request-dependent override of a policy's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Rule {
    /// Conditions that must all hold.
    pub when: Match,
    /// Replaces the policy's candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<CandidateSpec>>,
    /// Replaces the policy's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<Strategy>>,
    /// Replaces the policy's filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
    /// Replaces the policy's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Conditions on request features; absent conditions always hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Match {
    /// Request uses tools (or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_tools: Option<bool>,
    /// Request carries images (or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_vision: Option<bool>,
    /// Request asks for a JSON response (or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_response: Option<bool>,
    /// Estimated prompt tokens ≥ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_prompt_tokens: Option<u32>,
    /// Estimated prompt tokens ≤ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<u32>,
    /// `X-Boo-Source` is one of these (empty: any source, including none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
}

impl Match {
    /// True when every present condition holds for `req`.
    pub fn matches(&self, req: &RequestFeatures) -> bool {
        self.needs_tools.is_none_or(|b| b == req.needs_tools)
            && self.needs_vision.is_none_or(|b| b == req.needs_vision)
            && self.json_response.is_none_or(|b| b == req.json_response)
            && self
                .min_prompt_tokens
                .is_none_or(|n| req.est_prompt_tokens >= n)
            && self
                .max_prompt_tokens
                .is_none_or(|n| req.est_prompt_tokens <= n)
            && (self.source.is_empty()
                || req
                    .source
                    .as_deref()
                    .is_some_and(|s| self.source.iter().any(|x| x == s)))
    }
}

/// One entry of a policy's `candidates`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateSpec {
    /// One model on one provider: `provider/model`.
    Model(ModelRef),
    /// Every model of a provider: `provider/*`.
    Provider(ProviderId),
    /// Every model carrying a tag: `tag:<tag>`.
    Tag(String),
    /// Every known model: `*`.
    All,
}

impl CandidateSpec {
    /// Parses `provider/model`, `provider/*`, `tag:<tag>` or `*`.
    ///
    /// # Errors
    /// A message naming what is wrong with `s`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::All);
        }
        if let Some(tag) = s.strip_prefix("tag:") {
            if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "tag selector {s:?} needs a non-empty tag without whitespace"
                ));
            }
            return Ok(Self::Tag(tag.to_owned()));
        }
        if let Some(p) = s.strip_suffix("/*") {
            return ProviderId::new(p)
                .map(Self::Provider)
                .map_err(|e| format!("provider selector {s:?}: {e}"));
        }
        if !s.contains('/') {
            return Err(format!(
                "{s:?} is not a composite id `provider/model`, a `provider/*` or `tag:<name>` selector, or `*`"
            ));
        }
        s.parse::<ModelRef>()
            .map(Self::Model)
            .map_err(|e| format!("{s:?}: {e}"))
    }
}

impl fmt::Display for CandidateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(m) => write!(f, "{m}"),
            Self::Provider(p) => write!(f, "{p}/*"),
            Self::Tag(t) => write!(f, "tag:{t}"),
            Self::All => f.write_str("*"),
        }
    }
}

impl Serialize for CandidateSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CandidateSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An ordering strategy; see the module docs for each one's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Position in `candidates`.
    Priority,
    /// Ready > starting > unknown > cold; cold cost = measured load time.
    PreferLoaded,
    /// Shortest estimated service time from measured tok/s.
    Fastest,
    /// Highest advisory score.
    BestScore,
    /// Local before cloud, then lowest estimated price.
    Cheapest,
}

impl Strategy {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::PreferLoaded => "prefer_loaded",
            Self::Fastest => "fastest",
            Self::BestScore => "best_score",
            Self::Cheapest => "cheapest",
        }
    }

    const ALL: [Strategy; 5] = [
        Self::Priority,
        Self::PreferLoaded,
        Self::Fastest,
        Self::BestScore,
        Self::Cheapest,
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Optional filters of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filters {
    /// Local candidates with a longer queue wait estimate are demoted (spill over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// Only these lanes are eligible (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<Vec<Lane>>,
}

/// Attempt and time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Candidates tried at most (≥ 1).
    pub max_attempts: u32,
    /// Deadline for the whole request including failovers, ms.
    pub total_deadline_ms: u64,
    /// Budget for the first response byte of one attempt, ms (model load time excluded
    /// when cold starts are allowed).
    pub first_byte_ms: u64,
    /// Whether stopped models may be chosen (and loaded).
    pub allow_cold_start: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            total_deadline_ms: 120_000,
            first_byte_ms: 30_000,
            allow_cold_start: true,
        }
    }
}

/// The effective settings for one request after rule matching.
#[derive(Debug, Clone, Copy)]
pub struct Effective<'a> {
    /// Index of the matched rule, if any.
    pub rule: Option<usize>,
    /// Candidate specs in priority order.
    pub candidates: &'a [CandidateSpec],
    /// Ordering strategies.
    pub order: &'a [Strategy],
    /// Filters.
    pub filters: &'a Filters,
    /// Limits.
    pub limits: &'a Limits,
}

impl RoutePolicy {
    /// A policy with default order, filters and limits.
    pub fn new(name: impl Into<String>, candidates: Vec<CandidateSpec>) -> Self {
        Self {
            name: name.into(),
            description: None,
            rules: Vec::new(),
            candidates,
            order: vec![Strategy::PreferLoaded],
            filters: Filters::default(),
            limits: Limits::default(),
        }
    }

    /// Parses and validates one policy object.
    ///
    /// # Errors
    /// [`RoutingError::InvalidPolicy`] with every problem found, each with its JSON path.
    pub fn from_json(value: &Value) -> Result<Self, RoutingError> {
        parse_policy(value, "").map_err(|problems| RoutingError::InvalidPolicy { problems })
    }

    /// Semantic checks on a policy however it was built; empty when valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        validate_into(self, "", &mut out);
        out
    }

    /// Applies the first matching rule.
    pub fn effective(&self, req: &RequestFeatures) -> Effective<'_> {
        let rule = self.rules.iter().position(|r| r.when.matches(req));
        let r = rule.and_then(|i| self.rules.get(i));
        Effective {
            rule,
            candidates: r
                .and_then(|r| r.candidates.as_deref())
                .unwrap_or(&self.candidates),
            order: r.and_then(|r| r.order.as_deref()).unwrap_or(&self.order),
            filters: r.and_then(|r| r.filters.as_ref()).unwrap_or(&self.filters),
            limits: r.and_then(|r| r.limits.as_ref()).unwrap_or(&self.limits),
        }
    }
}

impl TryFrom<Value> for RoutePolicy {
    type Error = RoutingError;
    fn try_from(v: Value) -> Result<Self, RoutingError> {
        Self::from_json(&v)
    }
}

/// Parses a `policies` array: valid policies plus every problem (paths start at
/// `policies[i]`). Invalid entries and later duplicates of a name are left out.
pub fn parse_policies(values: &[Value]) -> (Vec<RoutePolicy>, Vec<Problem>) {
    let mut ok: Vec<RoutePolicy> = Vec::new();
    let mut problems = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let base = format!("policies[{i}]");
        match parse_policy(v, &base) {
            Ok(p) => {
                if ok.iter().any(|q| q.name == p.name) {
                    problems.push(Problem::new(
                        join(&base, "name"),
                        format!("duplicate policy name {:?}", p.name),
                    ));
                } else {
                    ok.push(p);
                }
            }
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    (ok, problems)
}

/// True when `name` is a virtual model id: `auto` or `auto:<1–64 of [a-z0-9_-]>`
/// (the rule of [`boo_model_ref::VirtualModel`]).
pub fn is_virtual_name(name: &str) -> bool {
    matches!(
        boo_model_ref::ModelId::parse(name),
        Ok(boo_model_ref::ModelId::Virtual(_))
    )
}

fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_owned()
    } else {
        format!("{base}.{field}")
    }
}

fn validate_into(p: &RoutePolicy, base: &str, out: &mut Vec<Problem>) {
    if !is_virtual_name(&p.name) {
        out.push(Problem::new(
            join(base, "name"),
            format!(
                "{:?} must be `auto` or `auto:<name>` with <name> of 1-64 [a-z0-9_-]",
                p.name
            ),
        ));
    }
    check_candidates(&p.candidates, &join(base, "candidates"), out);
    check_order(&p.order, &join(base, "order"), out);
    check_limits(&p.limits, &join(base, "limits"), out);
    for (i, r) in p.rules.iter().enumerate() {
        let rb = join(base, &format!("rules[{i}]"));
        if let (Some(lo), Some(hi)) = (r.when.min_prompt_tokens, r.when.max_prompt_tokens)
            && lo > hi
        {
            out.push(Problem::new(
                join(&rb, "when"),
                format!("min_prompt_tokens {lo} is greater than max_prompt_tokens {hi}: the rule never matches"),
            ));
        }
        if let Some(c) = &r.candidates {
            check_candidates(c, &join(&rb, "candidates"), out);
        }
        if let Some(o) = &r.order {
            check_order(o, &join(&rb, "order"), out);
        }
        if let Some(l) = &r.limits {
            check_limits(l, &join(&rb, "limits"), out);
        }
        if r.candidates.is_none() && r.order.is_none() && r.filters.is_none() && r.limits.is_none()
        {
            out.push(Problem::new(
                rb,
                "rule overrides nothing: set candidates, order, filters or limits".to_owned(),
            ));
        }
    }
}

fn check_candidates(c: &[CandidateSpec], path: &str, out: &mut Vec<Problem>) {
    if c.is_empty() {
        out.push(Problem::new(path.to_owned(), EMPTY_CANDIDATES.to_owned()));
    }
    for (i, s) in c.iter().enumerate() {
        if c[..i].contains(s) {
            out.push(Problem::new(
                format!("{path}[{i}]"),
                format!("duplicate candidate {s}"),
            ));
        }
    }
}

fn check_order(o: &[Strategy], path: &str, out: &mut Vec<Problem>) {
    for (i, s) in o.iter().enumerate() {
        if o[..i].contains(s) {
            out.push(Problem::new(
                format!("{path}[{i}]"),
                format!("strategy {} listed twice", s.as_str()),
            ));
        }
    }
}

fn check_limits(l: &Limits, path: &str, out: &mut Vec<Problem>) {
    if l.max_attempts == 0 {
        out.push(Problem::new(
            join(path, "max_attempts"),
            "must be at least 1".to_owned(),
        ));
    }
    if l.total_deadline_ms == 0 {
        out.push(Problem::new(
            join(path, "total_deadline_ms"),
            "must be greater than 0".to_owned(),
        ));
    }
    if l.first_byte_ms == 0 {
        out.push(Problem::new(
            join(path, "first_byte_ms"),
            "must be greater than 0".to_owned(),
        ));
    }
    if l.first_byte_ms > l.total_deadline_ms {
        out.push(Problem::new(
            join(path, "first_byte_ms"),
            format!(
                "{} exceeds total_deadline_ms {}",
                l.first_byte_ms, l.total_deadline_ms
            ),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON reader that collects every problem instead of stopping at the first.

struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn bad(&mut self, path: String, msg: impl Into<String>) {
        self.problems.push(Problem::new(path, msg.into()));
    }

    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(m) = v.as_object() else {
            let at = if path.is_empty() { "(policy)" } else { path };
            self.bad(
                at.to_owned(),
                format!("expected an object, got {}", kind(v)),
            );
            return None;
        };
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.bad(
                    join(path, k),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(m)
    }

    fn bool(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
        let v = m.get(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.bad(
                    join(path, key),
                    format!("expected true or false, got {}", kind(v)),
                );
                None
            }
        }
    }

    fn uint(&mut self, m: &Map<String, Value>, path: &str, key: &str, max: u64) -> Option<u64> {
        let v = m.get(key)?;
        match v.as_u64() {
            Some(n) if n <= max => Some(n),
            _ => {
                let want = if max == u64::MAX {
                    "a non-negative integer".to_owned()
                } else {
                    format!("an integer from 0 to {max}")
                };
                self.bad(join(path, key), format!("expected {want}, got {}", show(v)));
                None
            }
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Option<Vec<(usize, String)>> {
        let Some(a) = v.as_array() else {
            self.bad(
                path.to_owned(),
                format!("expected an array of strings, got {}", kind(v)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(a.len());
        for (i, x) in a.iter().enumerate() {
            match x.as_str() {
                Some(s) => out.push((i, s.to_owned())),
                None => self.bad(
                    format!("{path}[{i}]"),
                    format!("expected a string, got {}", kind(x)),
                ),
            }
        }
        Some(out)
    }

    fn candidates(&mut self, v: &Value, path: &str) -> Option<Vec<CandidateSpec>> {
        let list = self.string_list(v, path)?;
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list {
            match CandidateSpec::parse(&s) {
                Ok(c) if out.contains(&c) => {
                    self.bad(format!("{path}[{i}]"), format!("duplicate candidate {c}"))
                }
                Ok(c) => out.push(c),
                Err(e) => self.bad(format!("{path}[{i}]"), e),
            }
        }
        Some(out)
    }

    fn order(&mut self, v: &Value, path: &str) -> Option<Vec<Strategy>> {
        let list = self.string_list(v, path)?;
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list {
            match Strategy::parse(&s) {
                Some(x) if out.contains(&x) => {
                    self.bad(format!("{path}[{i}]"), format!("strategy {} listed twice", x.as_str()));
                }
                Some(x) => out.push(x),
                None => self.bad(
                    format!("{path}[{i}]"),
                    format!(
                        "unknown strategy {s:?} (expected one of: priority, prefer_loaded, fastest, best_score, cheapest)"
                    ),
                ),
            }
        }
        Some(out)
    }

    fn filters(&mut self, v: &Value, path: &str) -> Option<Filters> {
        let m = self.object(v, path, &["max_wait_ms", "lanes"])?;
        let max_wait_ms = self.uint(m, path, "max_wait_ms", u64::MAX);
        let lanes = match m.get("lanes") {
            None => None,
            Some(lv) => {
                let lp = join(path, "lanes");
                let list = self.string_list(lv, &lp)?;
                let mut lanes = Vec::new();
                for (i, s) in list {
                    match s.as_str() {
                        "local" => lanes.push(Lane::Local),
                        "cloud" => lanes.push(Lane::Cloud),
                        _ => self.bad(
                            format!("{lp}[{i}]"),
                            format!("unknown lane {s:?} (expected local or cloud)"),
                        ),
                    }
                }
                if lanes.is_empty() {
                    self.bad(lp, "needs at least one lane (local, cloud)");
                }
                Some(lanes)
            }
        };
        Some(Filters { max_wait_ms, lanes })
    }

    fn limits(&mut self, v: &Value, path: &str) -> Option<Limits> {
        let m = self.object(
            v,
            path,
            &[
                "max_attempts",
                "total_deadline_ms",
                "first_byte_ms",
                "allow_cold_start",
            ],
        )?;
        let d = Limits::default();
        Some(Limits {
            max_attempts: self
                .uint(m, path, "max_attempts", u64::from(u32::MAX))
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(d.max_attempts),
            total_deadline_ms: self
                .uint(m, path, "total_deadline_ms", u64::MAX)
                .unwrap_or(d.total_deadline_ms),
            first_byte_ms: self
                .uint(m, path, "first_byte_ms", u64::MAX)
                .unwrap_or(d.first_byte_ms),
            allow_cold_start: self
                .bool(m, path, "allow_cold_start")
                .unwrap_or(d.allow_cold_start),
        })
    }

    fn when(&mut self, v: &Value, path: &str) -> Match {
        let Some(m) = self.object(
            v,
            path,
            &[
                "needs_tools",
                "needs_vision",
                "json_response",
                "min_prompt_tokens",
                "max_prompt_tokens",
                "source",
            ],
        ) else {
            return Match::default();
        };
        let u32max = u64::from(u32::MAX);
        let to_u32 = |n: u64| u32::try_from(n).ok();
        Match {
            needs_tools: self.bool(m, path, "needs_tools"),
            needs_vision: self.bool(m, path, "needs_vision"),
            json_response: self.bool(m, path, "json_response"),
            min_prompt_tokens: self
                .uint(m, path, "min_prompt_tokens", u32max)
                .and_then(to_u32),
            max_prompt_tokens: self
                .uint(m, path, "max_prompt_tokens", u32max)
                .and_then(to_u32),
            source: match m.get("source") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(sv) => self
                    .string_list(sv, &join(path, "source"))
                    .map(|l| l.into_iter().map(|(_, s)| s).collect())
                    .unwrap_or_default(),
            },
        }
    }

    fn rule(&mut self, v: &Value, path: &str) -> Option<Rule> {
        let m = self.object(
            v,
            path,
            &["when", "candidates", "order", "filters", "limits"],
        )?;
        let when = match m.get("when") {
            Some(w) => self.when(w, &join(path, "when")),
            None => {
                self.bad(
                    join(path, "when"),
                    "missing: a rule needs a `when` object (use {} to match every request)",
                );
                Match::default()
            }
        };
        Some(Rule {
            when,
            candidates: m
                .get("candidates")
                .and_then(|c| self.candidates(c, &join(path, "candidates"))),
            order: m
                .get("order")
                .and_then(|o| self.order(o, &join(path, "order"))),
            filters: m
                .get("filters")
                .and_then(|f| self.filters(f, &join(path, "filters"))),
            limits: m
                .get("limits")
                .and_then(|l| self.limits(l, &join(path, "limits"))),
        })
    }
}

/// True when semantic problem `p` only repeats structural problem `h`: same path, or an
/// "empty list" complaint about a list whose entries were all rejected.
fn is_echo(p: &Problem, h: &Problem) -> bool {
    h.path.strip_prefix(p.path.as_str()).is_some_and(|rest| {
        rest.is_empty() || (rest.starts_with('[') && p.message.starts_with(EMPTY_CANDIDATES))
    })
}

const EMPTY_CANDIDATES: &str = "needs at least one candidate";

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}

/// Parses one policy object; `base` prefixes every problem path.
///
/// # Errors
/// Every structural and semantic problem found, with paths.
pub fn parse_policy(v: &Value, base: &str) -> Result<RoutePolicy, Vec<Problem>> {
    let mut r = Reader {
        problems: Vec::new(),
    };
    let Some(m) = r.object(
        v,
        base,
        &[
            "name",
            "description",
            "rules",
            "candidates",
            "order",
            "filters",
            "limits",
        ],
    ) else {
        return Err(r.problems);
    };
    let name = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            r.bad(
                join(base, "name"),
                format!("expected a string, got {}", kind(other)),
            );
            String::new()
        }
        None => {
            r.bad(
                join(base, "name"),
                "missing: a policy needs a name such as \"auto:code\"",
            );
            String::new()
        }
    };
    let description = match m.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            r.bad(
                join(base, "description"),
                format!("expected a string, got {}", kind(other)),
            );
            None
        }
    };
    let candidates = match m.get("candidates") {
        Some(c) => r
            .candidates(c, &join(base, "candidates"))
            .unwrap_or_default(),
        None => {
            r.bad(
                join(base, "candidates"),
                "missing: list composite ids or selectors (`provider/*`, `tag:<name>`)",
            );
            Vec::new()
        }
    };
    let order = m
        .get("order")
        .and_then(|o| r.order(o, &join(base, "order")))
        .unwrap_or_else(|| vec![Strategy::PreferLoaded]);
    let filters = m
        .get("filters")
        .and_then(|f| r.filters(f, &join(base, "filters")))
        .unwrap_or_default();
    let limits = m
        .get("limits")
        .and_then(|l| r.limits(l, &join(base, "limits")))
        .unwrap_or_default();
    let rules = match m.get("rules") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, x)| r.rule(x, &join(base, &format!("rules[{i}]"))))
            .collect(),
        Some(other) => {
            r.bad(
                join(base, "rules"),
                format!("expected an array of rules, got {}", kind(other)),
            );
            Vec::new()
        }
    };
    let policy = RoutePolicy {
        name,
        description,
        rules,
        candidates,
        order,
        filters,
        limits,
    };
    let structural = r.problems.len();
    validate_into(&policy, base, &mut r.problems);
    // A missing or badly typed name/candidates was already reported; drop the echo.
    if structural > 0 {
        let (head, tail) = r.problems.split_at(structural);
        let tail: Vec<Problem> = tail
            .iter()
            .filter(|p| !head.iter().any(|h| is_echo(p, h)))
            .cloned()
            .collect();
        r.problems.truncate(structural);
        r.problems.extend(tail);
    }
    if r.problems.is_empty() {
        Ok(policy)
    } else {
        Err(r.problems)
    }
}

/// The configured policies, looked up by virtual model name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PolicySet {
    policies: Vec<RoutePolicy>,
}

impl PolicySet {
    /// Parses a `policies` array (config file or store): the valid policies plus every problem.
    pub fn from_json(values: &[Value]) -> (Self, Vec<Problem>) {
        let (policies, problems) = parse_policies(values);
        (Self { policies }, problems)
    }

    /// Builds a set from typed policies.
    ///
    /// # Errors
    /// [`RoutingError::InvalidPolicy`] listing every problem (paths `policies[i]...`),
    /// including duplicate names.
    pub fn new(policies: Vec<RoutePolicy>) -> Result<Self, RoutingError> {
        let mut problems = Vec::new();
        for (i, p) in policies.iter().enumerate() {
            let base = format!("policies[{i}]");
            validate_into(p, &base, &mut problems);
            if policies[..i].iter().any(|q| q.name == p.name) {
                problems.push(Problem::new(
                    join(&base, "name"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self { policies })
        } else {
            Err(RoutingError::InvalidPolicy { problems })
        }
    }

    /// The policy for a virtual model name (`auto`, `auto:code`).
    pub fn get(&self, name: &str) -> Option<&RoutePolicy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// All policies in configuration order.
    pub fn policies(&self) -> &[RoutePolicy] {
        &self.policies
    }

    /// Policy names in configuration order (what `GET /v1/models` lists).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name.as_str())
    }

    /// Decides for a request to the virtual model `name`.
    ///
    /// # Errors
    /// [`RoutingError::UnknownPolicy`] when no policy has that name.
    pub fn decide<F: crate::FleetFacts + ?Sized>(
        &self,
        name: &str,
        req: &RequestFeatures,
        fleet: &F,
    ) -> Result<crate::Decision, RoutingError> {
        match self.get(name) {
            Some(p) => Ok(crate::decide(p, req, fleet)),
            None => Err(RoutingError::UnknownPolicy {
                name: name.to_owned(),
                known: self.names().map(str::to_owned).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
