//! Favorite models: normalization and visibility.

use std::collections::HashSet;

use crate::{Inventory, ModelId, ModelRef, RegistryView};

/// Most favorites kept; later ones are reported as rejected.
pub const MAX_FAVORITES: usize = 200;

/// A favorite that normalization dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// The raw input as given.
    pub input: String,
    /// Why it was dropped.
    pub reason: String,
}

/// Normalizes a raw favorites list.
///
/// Trims each entry, reports malformed ones in the second list, upgrades legacy bare ids to
/// `default/<id>`, de-duplicates keeping the first occurrence, and caps the list at
/// [`MAX_FAVORITES`]. Favorites naming providers the registry does not know are kept (they
/// are hidden by [`visible_favorites`], never deleted). Idempotent.
pub fn normalize_favorites(
    raw: &[String],
    registry: &dyn RegistryView,
) -> (Vec<ModelRef>, Vec<Rejected>) {
    let mut kept = Vec::new();
    let mut rejected = Vec::new();
    let mut seen = HashSet::new();
    let default = registry.default_provider();
    for input in raw {
        let reject = |reason: String| Rejected {
            input: input.clone(),
            reason,
        };
        let r = match ModelId::parse(input.trim()) {
            Err(e) => {
                rejected.push(reject(e.to_string()));
                continue;
            }
            Ok(ModelId::Virtual(v)) => {
                rejected.push(reject(format!(
                    "{v} is a virtual model routed by policy; only concrete models can be favorites"
                )));
                continue;
            }
            Ok(ModelId::Composite(r)) => r,
            Ok(ModelId::Bare(bare)) => {
                let Some(p) = default.clone() else {
                    rejected.push(reject(
                        "legacy bare id and no default provider to attach it to".to_owned(),
                    ));
                    continue;
                };
                match ModelRef::new(p, bare) {
                    Ok(r) => r,
                    Err(e) => {
                        rejected.push(reject(e.to_string()));
                        continue;
                    }
                }
            }
        };
        if seen.contains(&r) {
            continue;
        }
        if kept.len() >= MAX_FAVORITES {
            rejected.push(reject(format!("over the {MAX_FAVORITES}-favorite cap")));
            continue;
        }
        seen.insert(r.clone());
        kept.push(r);
    }
    (kept, rejected)
}

/// The favorites currently available in `inventory`, in favorites order.
///
/// Unavailable favorites are hidden, not removed: the input slice is untouched.
pub fn visible_favorites<'a>(
    favorites: &'a [ModelRef],
    inventory: &Inventory,
) -> Vec<&'a ModelRef> {
    favorites
        .iter()
        .filter(|f| inventory.serves(&f.provider, &f.model))
        .collect()
}
