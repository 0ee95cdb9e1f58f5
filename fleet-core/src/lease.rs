//! Host-access leases: who may use a host exclusively (a bench run, an eval), and until when.
//!
//! [`HostAccess`] is the seam the bench engine calls before every run; [`InMemoryHostAccess`] is
//! the in-process implementation. A database-backed lease (shared by several writers) can
//! implement the same trait later without touching its callers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A granted lease on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The host (provider id).
    pub provider: String,
    /// Who holds it (e.g. `bench:run-42`).
    pub holder: String,
    /// Why (e.g. `bench`, `eval`).
    pub purpose: String,
    /// A number unique per grant, so a stale holder cannot release a newer lease.
    pub token: u64,
    /// When it was granted (ms since epoch).
    pub acquired_at: u64,
    /// When it lapses unless renewed (ms since epoch).
    pub expires_at: u64,
}

impl Lease {
    /// Whether the lease still holds at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at
    }
}

/// Why a lease was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host access denied: {reason}")]
pub struct Denied {
    /// A human-readable reason, naming the current holder when there is one.
    pub reason: String,
    /// The lease that blocks this one, if any.
    pub held_by: Option<Lease>,
}

/// Exclusive access to hosts. Synchronous on purpose: implementations do no IO in this crate.
pub trait HostAccess {
    /// Asks for `provider` for `purpose` on behalf of `holder` at `now_ms`.
    ///
    /// # Errors
    /// [`Denied`] while another unexpired lease holds the host.
    fn acquire(
        &self,
        provider: &str,
        purpose: &str,
        holder: &str,
        now_ms: u64,
    ) -> Result<Lease, Denied>;

    /// Extends a lease still held by its token.
    ///
    /// # Errors
    /// [`Denied`] when the lease expired or was replaced.
    fn renew(&self, lease: &Lease, now_ms: u64) -> Result<Lease, Denied>;

    /// Gives a lease back; returns `false` when another grant has replaced it.
    fn release(&self, lease: &Lease) -> bool;

    /// The unexpired lease on `provider`, if any.
    fn current(&self, provider: &str, now_ms: u64) -> Option<Lease>;
}

/// An in-memory [`HostAccess`]: one lease per host, lasting `ttl_ms` from grant or renewal.
///
/// # Example
/// ```
/// use boo_fleet_core::{HostAccess, InMemoryHostAccess};
/// let access = InMemoryHostAccess::new(60_000);
/// let lease = access.acquire("gpu-box", "bench", "bench:run-1", 1_000).unwrap();
/// let denied = access.acquire("gpu-box", "eval", "eval:7", 2_000).unwrap_err();
/// assert!(denied.reason.contains("bench:run-1"));
/// assert!(access.release(&lease));
/// assert!(access.acquire("gpu-box", "eval", "eval:7", 3_000).is_ok());
/// ```
#[derive(Debug)]
pub struct InMemoryHostAccess {
    ttl_ms: u64,
    inner: Mutex<Leases>,
}

#[derive(Debug, Default)]
struct Leases {
    next_token: u64,
    by_host: BTreeMap<String, Lease>,
}

impl InMemoryHostAccess {
    /// Leases last `ttl_ms` after grant or renewal (at least 1 ms).
    pub fn new(ttl_ms: u64) -> Self {
        InMemoryHostAccess {
            ttl_ms: ttl_ms.max(1),
            inner: Mutex::new(Leases::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        // A panic while holding the lock cannot leave `Leases` half-updated (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HostAccess for InMemoryHostAccess {
    fn acquire(
        &self,
        provider: &str,
        purpose: &str,
        holder: &str,
        now_ms: u64,
    ) -> Result<Lease, Denied> {
        let mut g = self.lock();
        if let Some(cur) = g.by_host.get(provider).filter(|l| l.is_active(now_ms)) {
            return Err(Denied {
                reason: format!(
                    "`{provider}` is leased to `{}` for {} until {}",
                    cur.holder, cur.purpose, cur.expires_at
                ),
                held_by: Some(cur.clone()),
            });
        }
        g.next_token += 1;
        let lease = Lease {
            provider: provider.to_owned(),
            holder: holder.to_owned(),
            purpose: purpose.to_owned(),
            token: g.next_token,
            acquired_at: now_ms,
            expires_at: now_ms.saturating_add(self.ttl_ms),
        };
        g.by_host.insert(provider.to_owned(), lease.clone());
        Ok(lease)
    }

    fn renew(&self, lease: &Lease, now_ms: u64) -> Result<Lease, Denied> {
        let mut g = self.lock();
        match g.by_host.get_mut(&lease.provider) {
            Some(cur) if cur.token == lease.token && cur.is_active(now_ms) => {
                cur.expires_at = now_ms.saturating_add(self.ttl_ms);
                Ok(cur.clone())
            }
            other => Err(Denied {
                reason: format!(
                    "lease {} on `{}` is no longer held",
                    lease.token, lease.provider
                ),
                held_by: other.filter(|l| l.is_active(now_ms)).cloned(),
            }),
        }
    }

    fn release(&self, lease: &Lease) -> bool {
        let mut g = self.lock();
        if g.by_host
            .get(&lease.provider)
            .is_some_and(|cur| cur.token == lease.token)
        {
            g.by_host.remove(&lease.provider);
            true
        } else {
            false
        }
    }

    fn current(&self, provider: &str, now_ms: u64) -> Option<Lease> {
        self.lock()
            .by_host
            .get(provider)
            .filter(|l| l.is_active(now_ms))
            .cloned()
    }
}

#[cfg(test)]
mod tests;
