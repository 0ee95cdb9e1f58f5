//! Property tests: loading and resolving arbitrary input never panics.

use boo_model_ref::{Inventory, InventoryModel, ProviderId};
use boo_provider_registry::*;
use proptest::prelude::*;

const FLEET: &str = r#"{ "providers": [
  { "id": "sam-desktop", "kind": "llama-swap", "base_url": "http://a:8080" },
  { "id": "embedding", "kind": "llama-swap", "base_url": "http://b:8080",
    "sidecar": { "url": "http://b:8081", "models": ["bge-m3"] } },
  { "id": "deepseek", "kind": "openai", "base_url": "https://api.deepseek.com/v1", "models": ["deepseek-chat"] },
  { "id": "off", "kind": "gateway", "base_url": "http://c", "enabled": false } ] }"#;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z{}:/._-]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("http://h")),
        Just(serde_json::Value::from("llama-swap")),
        Just(serde_json::Value::from("{env:X}")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("providers".to_string()),
            Just("id".to_string()),
            Just("kind".to_string()),
            Just("base_url".to_string()),
            Just("sidecar".to_string()),
            Just("models".to_string()),
            Just("default".to_string()),
            Just("timeouts".to_string()),
            Just("headers".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn resolving_arbitrary_strings_never_panics(s in any::<String>(), t in "[a-z/:A-Z0-9 _.-]{0,24}") {
        let reg = from_json_str(FLEET, &MapEnv::new()).unwrap().registry;
        let mut inv = Inventory::new();
        inv.set_provider(ProviderId::new("embedding").unwrap(), vec![InventoryModel::new(t.clone())]);
        for input in [&s, &t] {
            if let Ok(r) = reg.resolve(input, Some(&inv)) {
                // Whatever resolves routes to a configured, enabled provider.
                let p = reg.provider(&r.provider).unwrap();
                prop_assert!(p.enabled);
                prop_assert_eq!(r.model.provider, r.provider.clone());
                prop_assert!(!r.target.base_url.ends_with('/'));
            }
            let _ = reg.resolve(input, None);
        }
    }

    #[test]
    fn loading_arbitrary_json_never_panics(v in json_value(), raw in any::<String>()) {
        let env = MapEnv::new();
        if let Ok(loaded) = from_json_str(&v.to_string(), &env) {
            let reg = loaded.registry;
            prop_assert!(reg.default_provider().enabled);
            prop_assert!(reg.providers().iter().all(|p| !p.base_url.ends_with('/')));
        }
        let _ = from_json_str(&raw, &env);
    }
}
