//! Hot reload: an atomically swappable registry.

use std::sync::{Arc, RwLock};

use crate::{ConfigError, ConfigSource, Env, Registry, Warning, load};

/// A shared, atomically swappable [`Registry`]. Clones share the same slot.
///
/// Readers call [`RegistryHandle::load`] and keep the `Arc` for the duration of one request;
/// a reload never changes a registry a reader already holds.
#[derive(Debug, Clone)]
pub struct RegistryHandle {
    slot: Arc<RwLock<Arc<Registry>>>,
}

impl RegistryHandle {
    /// Wraps an initial registry.
    pub fn new(r: Registry) -> Self {
        Self {
            slot: Arc::new(RwLock::new(Arc::new(r))),
        }
    }

    /// The current registry.
    pub fn load(&self) -> Arc<Registry> {
        match self.slot.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the registry unconditionally.
    pub fn store(&self, r: Registry) {
        let new = Arc::new(r);
        match self.slot.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Loads `source` again and swaps it in when valid.
    ///
    /// # Errors
    /// Every problem of the new configuration; the old registry then stays in place.
    pub fn reload(&self, source: ConfigSource, env: &dyn Env) -> Result<Vec<Warning>, ConfigError> {
        let loaded = load(source, env)?;
        self.store(loaded.registry);
        Ok(loaded.warnings)
    }
}
