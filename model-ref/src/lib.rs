//! Composite model identity for boocontrol: `provider/model`.
//!
//! Every model on every host gets one stable id, `provider/model`, split at the **first** `/`
//! (`sam-desktop/org/Qwen3-8B:Q4_K_M` is provider `sam-desktop`, wire model
//! `org/Qwen3-8B:Q4_K_M`). Legacy bare ids (`qwen3-8b`) stay valid and belong to the default
//! provider; `auto` and `auto:<policy>` are virtual models routed by policy.
//!
//! This crate is pure: no IO, no clock, no async. It does not know URLs or config files
//! (that is `boo-provider-registry`); it sees the registry only through [`RegistryView`].
//!
//! Main items: [`ModelId::parse`], [`ModelRef`], [`ProviderId`], [`display_label`],
//! [`Inventory`], [`normalize_favorites`], [`visible_favorites`], [`Catalog::grouped`].
//!
//! ```
//! use boo_model_ref::{ModelId, ModelRef};
//!
//! let id = ModelId::parse("embedding/deepseek-r1-qwen3-8b").unwrap();
//! let ModelId::Composite(r) = id else { panic!("composite expected") };
//! assert_eq!(r.provider.as_str(), "embedding");
//! assert_eq!(r.model, "deepseek-r1-qwen3-8b");
//! assert_eq!(r.to_string().parse::<ModelRef>().unwrap(), r);
//! ```
//!
//! Invariants: `parse(display(x)) == x`; parsing never panics on any input; favorites
//! normalization is idempotent and never drops a valid favorite (below the 200 cap).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(missing_docs)]

mod catalog;
mod error;
mod favorites;
mod id;
mod inventory;

pub use catalog::{Catalog, CatalogEntry, CatalogSection, SectionKind};
pub use error::ModelRefError;
pub use favorites::{MAX_FAVORITES, Rejected, normalize_favorites, visible_favorites};
pub use id::{
    MAX_MODEL_ID_BYTES, MAX_PROVIDER_ID_LEN, ModelId, ModelRef, ProviderId, VirtualModel,
    display_label,
};
pub use inventory::{Inventory, InventoryModel, LoadState, RegistryView};
