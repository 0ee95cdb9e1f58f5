//! Behaviour tests for composite model ids, favorites and the grouped catalog.

use boo_model_ref::*;
use proptest::prelude::*;

struct View {
    ids: Vec<&'static str>,
    default: Option<&'static str>,
}

impl RegistryView for View {
    fn provider_ids(&self) -> Vec<ProviderId> {
        self.ids
            .iter()
            .map(|s| ProviderId::new(s).unwrap())
            .collect()
    }
    fn default_provider(&self) -> Option<ProviderId> {
        self.default.map(|s| ProviderId::new(s).unwrap())
    }
    fn provider_label(&self, id: &ProviderId) -> Option<String> {
        Some(format!("Label of {id}"))
    }
}

fn view() -> View {
    View {
        ids: vec!["sam-desktop", "embedding", "deepseek"],
        default: Some("sam-desktop"),
    }
}

fn pid(s: &str) -> ProviderId {
    ProviderId::new(s).unwrap()
}

fn mref(s: &str) -> ModelRef {
    s.parse().unwrap()
}

#[test]
fn composite_splits_at_first_slash_and_keeps_the_rest() {
    let r = mref("sam-desktop/org/Qwen3-8B:Q4_K_M");
    assert_eq!(r.provider.as_str(), "sam-desktop");
    assert_eq!(r.model, "org/Qwen3-8B:Q4_K_M");
    assert_eq!(r.to_string(), "sam-desktop/org/Qwen3-8B:Q4_K_M");
}

#[test]
fn collision_case_parses_to_embedding_provider() {
    let ModelId::Composite(r) = ModelId::parse("embedding/deepseek-r1-qwen3-8b").unwrap() else {
        panic!("expected composite")
    };
    assert_eq!(r.provider, pid("embedding"));
    assert_eq!(r.model, "deepseek-r1-qwen3-8b");
}

#[test]
fn parse_classifies_bare_virtual_and_composite() {
    assert_eq!(
        ModelId::parse("qwen3-8b").unwrap(),
        ModelId::Bare("qwen3-8b".into())
    );
    // First segment is not a valid provider id (uppercase) → bare legacy id keeping its '/'.
    assert_eq!(
        ModelId::parse("Org/Model").unwrap(),
        ModelId::Bare("Org/Model".into())
    );
    let ModelId::Virtual(v) = ModelId::parse("auto").unwrap() else {
        panic!()
    };
    assert_eq!(v.policy(), None);
    assert_eq!(v.name(), "auto");
    let ModelId::Virtual(v) = ModelId::parse("auto:code").unwrap() else {
        panic!()
    };
    assert_eq!(v.policy(), Some("code"));
    assert_eq!(v.name(), "auto:code");
    // A provider may be called "auto-x"; "auto/x" is composite.
    assert!(matches!(
        ModelId::parse("auto/x").unwrap(),
        ModelId::Composite(_)
    ));
}

#[test]
fn rejections_are_typed() {
    assert_eq!(ModelId::parse(""), Err(ModelRefError::Empty));
    assert!(matches!(
        ModelId::parse("a b"),
        Err(ModelRefError::InvalidChar { at: 1, .. })
    ));
    assert!(matches!(
        ModelId::parse("a\u{7}b"),
        Err(ModelRefError::InvalidChar { .. })
    ));
    assert!(matches!(
        ModelId::parse("qwen\n"),
        Err(ModelRefError::InvalidChar { .. })
    ));
    let long = "x".repeat(513);
    assert!(matches!(
        ModelId::parse(&long),
        Err(ModelRefError::TooLong { len: 513, max: 512 })
    ));
    assert!(ModelId::parse(&"x".repeat(512)).is_ok());
    assert!(matches!(
        ModelId::parse("/m"),
        Err(ModelRefError::EmptySide {
            side: "provider",
            ..
        })
    ));
    assert!(matches!(
        ModelId::parse("local/"),
        Err(ModelRefError::EmptySide { side: "model", .. })
    ));
    assert!(matches!(
        ModelId::parse("auto:"),
        Err(ModelRefError::InvalidPolicy { .. })
    ));
    assert!(matches!(
        ModelId::parse("auto:Big"),
        Err(ModelRefError::InvalidPolicy { .. })
    ));
    assert!(matches!(
        "qwen".parse::<ModelRef>(),
        Err(ModelRefError::NotComposite { .. })
    ));
    assert!(matches!(
        "Org/Model".parse::<ModelRef>(),
        Err(ModelRefError::InvalidProviderId { .. })
    ));
    let msg = ModelId::parse("local/").unwrap_err().to_string();
    assert!(msg.contains("empty model side"), "{msg}");
}

#[test]
fn provider_id_rules() {
    assert!(ProviderId::new("a").is_ok());
    assert!(ProviderId::new("0box_1-x").is_ok());
    assert!(ProviderId::new(&"a".repeat(64)).is_ok());
    for bad in ["", "-a", "_a", "A", "a.b", "a/b", "é"] {
        assert!(ProviderId::new(bad).is_err(), "{bad:?} accepted");
    }
    assert!(ProviderId::new(&"a".repeat(65)).is_err());
}

#[test]
fn serde_uses_the_string_form() {
    let r = mref("deepseek/deepseek-chat");
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(json, "\"deepseek/deepseek-chat\"");
    assert_eq!(serde_json::from_str::<ModelRef>(&json).unwrap(), r);
    assert!(serde_json::from_str::<ModelRef>("\"bare\"").is_err());
    assert!(serde_json::from_str::<ProviderId>("\"Bad\"").is_err());
    assert_eq!(
        serde_json::to_string(&LoadState::Starting).unwrap(),
        "\"starting\""
    );
}

#[test]
fn display_label_is_presentation_only() {
    assert_eq!(
        display_label("sam-desktop/Qwen3-8B-Q4_K_M.gguf"),
        "Qwen3-8B-Q4_K_M"
    );
    assert_eq!(
        display_label("sam-desktop/org/Qwen3-8B:Q4_K_M"),
        "org/Qwen3-8B:Q4_K_M"
    );
    assert_eq!(display_label("Model.GGUF"), "Model");
    assert_eq!(display_label("bge-m3"), "bge-m3");
    assert_eq!(display_label(".gguf"), ".gguf");
}

#[test]
fn inventory_lookups() {
    let mut inv = Inventory::new();
    inv.set_provider(pid("a"), vec![InventoryModel::new("m1")]);
    inv.set_provider(
        pid("b"),
        vec![InventoryModel {
            id: "m1".into(),
            state: Some(LoadState::Ready),
            context_length: Some(8192),
        }],
    );
    assert!(inv.serves(&pid("a"), "m1"));
    assert!(!inv.serves(&pid("a"), "m2"));
    assert_eq!(inv.providers_serving("m1"), vec![&pid("a"), &pid("b")]);
    assert_eq!(inv.state(&mref("b/m1")), Some(LoadState::Ready));
    assert_eq!(inv.state(&mref("a/m1")), None);
    // Replacing keeps order.
    inv.set_provider(pid("a"), vec![]);
    assert_eq!(
        inv.providers().collect::<Vec<_>>(),
        vec![&pid("a"), &pid("b")]
    );
    assert_eq!(inv.providers_serving("m1"), vec![&pid("b")]);
}

#[test]
fn favorites_normalization_rules() {
    let raw: Vec<String> = [
        "  qwen3-8b ",          // bare → default provider
        "embedding/bge-m3",     // composite kept
        "sam-desktop/qwen3-8b", // duplicate of the first after upgrade
        "bad id",               // malformed
        "auto:code",            // virtual: rejected
        "gone-host/llama",      // unknown provider: kept (hidden later, never deleted)
        "",                     // empty: reported
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (kept, rejected) = normalize_favorites(&raw, &view());
    assert_eq!(
        kept,
        vec![
            mref("sam-desktop/qwen3-8b"),
            mref("embedding/bge-m3"),
            mref("gone-host/llama")
        ]
    );
    let inputs: Vec<_> = rejected.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(inputs, vec!["bad id", "auto:code", ""]);
    assert!(rejected.iter().all(|r| !r.reason.is_empty()));
}

#[test]
fn favorites_cap_at_200_and_report_the_rest() {
    let raw: Vec<String> = (0..205).map(|i| format!("sam-desktop/m{i}")).collect();
    let (kept, rejected) = normalize_favorites(&raw, &view());
    assert_eq!(kept.len(), MAX_FAVORITES);
    assert_eq!(rejected.len(), 5);
    assert_eq!(rejected[0].input, "sam-desktop/m200");
}

#[test]
fn bare_favorite_without_default_is_reported() {
    let v = View {
        ids: vec![],
        default: None,
    };
    let (kept, rejected) = normalize_favorites(&["qwen".to_string()], &v);
    assert!(kept.is_empty());
    assert_eq!(rejected.len(), 1);
}

#[test]
fn unavailable_favorites_are_hidden_not_deleted() {
    let favs = vec![mref("embedding/bge-m3"), mref("sam-desktop/qwen3-8b")];
    let mut inv = Inventory::new();
    inv.set_provider(pid("sam-desktop"), vec![InventoryModel::new("qwen3-8b")]);
    let visible = visible_favorites(&favs, &inv);
    assert_eq!(visible, vec![&favs[1]]);
    assert_eq!(favs.len(), 2);
}

#[test]
fn catalog_has_favorites_first_then_providers_in_registry_order() {
    let mut inv = Inventory::new();
    // Inventory order differs from registry order on purpose.
    inv.set_provider(
        pid("embedding"),
        vec![
            InventoryModel::new("bge-m3"),
            InventoryModel::new("deepseek-r1-qwen3-8b"),
        ],
    );
    inv.set_provider(
        pid("sam-desktop"),
        vec![InventoryModel {
            id: "qwen3-8b.gguf".into(),
            state: Some(LoadState::Ready),
            context_length: None,
        }],
    );
    let favs = vec![
        mref("sam-desktop/qwen3-8b.gguf"),
        mref("gone/x"),
        mref("embedding/bge-m3"),
    ];
    let cat = Catalog::grouped(&inv, &favs, &view());
    let ids: Vec<_> = cat.sections.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["favorites", "sam-desktop", "embedding", "deepseek"]
    );
    let fav_ids: Vec<_> = cat.sections[0]
        .entries
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        fav_ids,
        vec!["sam-desktop/qwen3-8b.gguf", "embedding/bge-m3"]
    );
    let e = &cat.sections[0].entries[0];
    assert_eq!(e.label, "qwen3-8b");
    assert_eq!(e.provider_label, "Label of sam-desktop");
    assert_eq!(e.state, Some(LoadState::Ready));
    // Favorite also stays in its provider section, flagged.
    let emb = &cat.sections[2];
    assert_eq!(emb.kind, SectionKind::Provider);
    assert_eq!(emb.entries[0].id, "embedding/bge-m3");
    assert!(emb.entries[0].favorite);
    assert!(!emb.entries[1].favorite);
    let json = serde_json::to_value(&cat).unwrap();
    assert_eq!(json["sections"][0]["kind"], "favorites");
}

#[test]
fn catalog_omits_favorites_section_when_none_available() {
    let cat = Catalog::grouped(&Inventory::new(), &[mref("gone/x")], &view());
    assert_eq!(cat.sections[0].id, "sam-desktop");
    assert!(cat.sections.iter().all(|s| s.entries.is_empty()));
}

fn provider_strategy() -> impl Strategy<Value = ProviderId> {
    "[a-z0-9][a-z0-9_-]{0,63}".prop_map(|s| ProviderId::new(&s).unwrap())
}

fn model_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/-]{0,40}[A-Za-z0-9._:-]".prop_filter("no empty side", |m| !m.starts_with('/'))
}

proptest! {
    #[test]
    fn model_ref_round_trips(p in provider_strategy(), m in model_strategy()) {
        let r = ModelRef::new(p, m).unwrap();
        let shown = r.to_string();
        prop_assert_eq!(shown.parse::<ModelRef>().unwrap(), r.clone());
        prop_assert_eq!(ModelId::parse(&shown).unwrap(), ModelId::Composite(r));
    }

    #[test]
    fn parse_never_panics_and_round_trips(s in any::<String>()) {
        if let Ok(id) = ModelId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(ModelId::parse(&id.to_string()).unwrap(), id);
        }
        let _ = s.parse::<ModelRef>();
        let _ = display_label(&s);
    }

    #[test]
    fn parse_structured_noise(s in "[a-zA-Z0-9/: _.\\-]{0,20}") {
        if let Ok(id) = ModelId::parse(&s) {
            prop_assert_eq!(ModelId::parse(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn favorites_idempotent_and_lossless(
        raw in proptest::collection::vec(
            prop_oneof![
                "[a-z]{1,6}/[A-Za-z0-9:/-]{1,8}",
                "[A-Za-z0-9-]{1,8}",
                "[ a-z/:]{0,6}",
                Just("auto".to_string()),
            ],
            0..30,
        )
    ) {
        let v = view();
        let (once, _) = normalize_favorites(&raw, &v);
        let shown: Vec<String> = once.iter().map(|r| r.to_string()).collect();
        let (twice, rejected) = normalize_favorites(&shown, &v);
        prop_assert_eq!(&twice, &once);
        prop_assert!(rejected.is_empty());
        // Never loses a valid composite favorite.
        for s in &raw {
            if let Ok(ModelId::Composite(r)) = ModelId::parse(s.trim()) {
                prop_assert!(once.contains(&r), "lost {}", r);
            }
        }
    }
}
