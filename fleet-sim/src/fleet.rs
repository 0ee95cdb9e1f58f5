//! Fleets: several hosts from one spec.

use crate::error::SimError;
use crate::host::{SimHost, start_host_scaled};
use crate::spec::FleetSpec;

/// The demo spec (`examples/fleet-demo.yaml`).
pub const DEMO_SPEC_YAML: &str = include_str!("../../examples/fleet-demo.yaml");

/// A set of running hosts. Dropping it stops them.
#[derive(Debug)]
pub struct Fleet {
    hosts: Vec<SimHost>,
}

impl Fleet {
    /// Starts every host of the spec (sidecars included), each on its own port.
    ///
    /// # Errors
    /// [`SimError::Spec`] for a bad spec, [`SimError::Bind`] when a listen address is taken.
    pub async fn start(spec: FleetSpec) -> Result<Fleet, SimError> {
        spec.validate()?;
        let mut hosts = Vec::with_capacity(spec.hosts.len());
        for h in spec.hosts {
            hosts.push(start_host_scaled(h, spec.time_scale).await?);
        }
        Ok(Fleet { hosts })
    }

    /// A host by id (sidecars are found through [`SimHost::sidecar`], or here by their own id).
    pub fn host(&self, id: &str) -> Option<&SimHost> {
        self.hosts.iter().find_map(|h| {
            if h.id() == id {
                Some(h)
            } else {
                h.sidecar().filter(|s| s.id() == id)
            }
        })
    }

    /// The top-level hosts, in spec order.
    pub fn hosts(&self) -> &[SimHost] {
        &self.hosts
    }

    /// The two-host demo fleet from the project seeds: `sam-desktop` (big GPU, several chat and
    /// code models incl. a 4k-context one) and `embedding` (small GPU, embedding and small models
    /// incl. `deepseek-r1-qwen3-8b`, with a llama-server sidecar serving `bge-m3`).
    pub fn demo_spec() -> FleetSpec {
        // The embedded file is checked by a unit test; an empty fleet would fail `start`.
        FleetSpec::from_yaml(DEMO_SPEC_YAML).unwrap_or(FleetSpec {
            time_scale: None,
            hosts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_spec_parses_and_has_the_seed_hosts() {
        let spec = FleetSpec::from_yaml(DEMO_SPEC_YAML).expect("demo spec is valid");
        let ids: Vec<&str> = spec.hosts.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["sam-desktop", "embedding"]);
        let emb = &spec.hosts[1];
        assert!(emb.models.iter().any(|m| m.id == "deepseek-r1-qwen3-8b"));
        assert!(emb.models.iter().any(|m| m.embedding));
        assert_eq!(
            emb.sidecar.as_ref().map(|s| s.mode),
            Some(crate::spec::Mode::LlamaServer)
        );
        assert!(spec.hosts[0].models.iter().any(|m| m.n_ctx == 4096));
        assert_eq!(Fleet::demo_spec(), spec);
    }
}
