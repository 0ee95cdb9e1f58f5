//! The grouped model catalog: Favorites first, then one section per provider.

use serde::Serialize;

use crate::LoadState;
use crate::{Inventory, ModelRef, ProviderId, RegistryView, display_label, visible_favorites};

/// A grouped model catalog, ready to serialize for a picker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalog {
    /// Sections in display order.
    pub sections: Vec<CatalogSection>,
}

/// What a section groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    /// The available favorites.
    Favorites,
    /// Everything one provider serves.
    Provider,
}

/// One section of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogSection {
    /// `"favorites"` or the provider id.
    pub id: String,
    /// `"Favorites"` or the provider label.
    pub label: String,
    /// Section kind.
    pub kind: SectionKind,
    /// Entries in order.
    pub entries: Vec<CatalogEntry>,
}

/// One model in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEntry {
    /// The composite id (`provider/model`): use this for routing.
    pub id: String,
    /// Presentation label (see [`display_label`]).
    pub label: String,
    /// Provider id.
    pub provider: String,
    /// Provider label.
    pub provider_label: String,
    /// Load state when known.
    pub state: Option<LoadState>,
    /// Whether the model is a favorite.
    pub favorite: bool,
}

impl Catalog {
    /// Builds the catalog: a Favorites section (available favorites in favorites order;
    /// omitted when none is available), then one section per enabled provider in registry
    /// order. A favorite also stays in its provider section.
    pub fn grouped(
        inventory: &Inventory,
        favorites: &[ModelRef],
        registry: &dyn RegistryView,
    ) -> Catalog {
        let label_of = |p: &ProviderId| registry.provider_label(p).unwrap_or_else(|| p.to_string());
        let entry = |r: &ModelRef, favorite: bool| CatalogEntry {
            id: r.to_string(),
            label: display_label(&r.model),
            provider: r.provider.to_string(),
            provider_label: label_of(&r.provider),
            state: inventory.state(r),
            favorite,
        };
        let mut sections = Vec::new();
        let visible = visible_favorites(favorites, inventory);
        if !visible.is_empty() {
            sections.push(CatalogSection {
                id: "favorites".to_owned(),
                label: "Favorites".to_owned(),
                kind: SectionKind::Favorites,
                entries: visible.iter().map(|r| entry(r, true)).collect(),
            });
        }
        for p in registry.provider_ids() {
            let entries = inventory
                .models(&p)
                .iter()
                .map(|m| {
                    let r = ModelRef {
                        provider: p.clone(),
                        model: m.id.clone(),
                    };
                    let fav = favorites.contains(&r);
                    entry(&r, fav)
                })
                .collect();
            sections.push(CatalogSection {
                id: p.to_string(),
                label: label_of(&p),
                kind: SectionKind::Provider,
                entries,
            });
        }
        Catalog { sections }
    }
}
