//! Behaviour tests: config validation, env substitution, legacy fallback, resolution.

use std::time::Duration;

use boo_model_ref::{Inventory, InventoryModel, ModelRef, ProviderId, RegistryView};
use boo_provider_registry::*;

const FLEET: &str = r#"{
  "providers": [
    { "id": "sam-desktop", "label": "Sam's desktop", "kind": "llama-swap",
      "base_url": "http://192.168.1.10:8080/", "os": "windows", "gpu_label": "RTX 5090" },
    { "id": "embedding", "kind": "llama-swap", "base_url": "http://192.168.1.20:8080",
      "sidecar": { "url": "http://192.168.1.20:8081", "models": ["bge-m3"] } },
    { "id": "deepseek", "kind": "openai", "base_url": "https://api.deepseek.com/v1",
      "api_key": "{env:DEEPSEEK_API_KEY}", "models": ["deepseek-chat", "deepseek-reasoner"] },
    { "id": "old-box", "kind": "llama-server", "base_url": "http://10.0.0.9:8080", "enabled": false },
    { "id": "office", "kind": "gateway", "base_url": "http://10.0.0.50:9503", "enabled": false }
  ]
}"#;

fn env() -> MapEnv {
    MapEnv::new().with("DEEPSEEK_API_KEY", "sk-secret-123")
}

fn fleet() -> Registry {
    from_json_str(FLEET, &env()).unwrap().registry
}

fn pid(s: &str) -> ProviderId {
    ProviderId::new(s).unwrap()
}

fn problems(json: &str, env: &MapEnv) -> Vec<Problem> {
    match from_json_str(json, env) {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn has(problems: &[Problem], path: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.path == path && p.message.contains(needle))
}

#[test]
fn collision_case_goes_to_embedding_host_not_cloud_not_sidecar() {
    let r = fleet()
        .resolve("embedding/deepseek-r1-qwen3-8b", None)
        .unwrap();
    assert_eq!(r.provider, pid("embedding"));
    assert_eq!(r.wire_model, "deepseek-r1-qwen3-8b");
    assert_eq!(r.model.to_string(), "embedding/deepseek-r1-qwen3-8b");
    assert_eq!(r.target.base_url, "http://192.168.1.20:8080");
    assert!(!r.target.via_sidecar);
    assert_eq!(r.kind, ProviderKind::LlamaSwap);
    assert_eq!(r.lane, Lane::Local);
    assert!(
        r.target.headers.is_empty(),
        "no DeepSeek key leaks to a local host"
    );
}

#[test]
fn sidecar_only_for_listed_models_of_its_own_provider() {
    let reg = fleet();
    let r = reg.resolve("embedding/bge-m3", None).unwrap();
    assert_eq!(r.target.base_url, "http://192.168.1.20:8081");
    assert!(r.target.via_sidecar);
    assert_eq!(r.target.kind, ProviderKind::LlamaServer);
    assert_eq!(
        r.target.url_for("/v1/embeddings"),
        "http://192.168.1.20:8081/v1/embeddings"
    );
    // Same wire model on another provider never uses embedding's sidecar.
    let r = reg.resolve("sam-desktop/bge-m3", None).unwrap();
    assert_eq!(r.target.base_url, "http://192.168.1.10:8080");
    assert!(!r.target.via_sidecar);
}

#[test]
fn same_wire_model_on_two_hosts_gets_two_urls() {
    let reg = fleet();
    let a = reg.resolve("sam-desktop/qwen3-8b", None).unwrap();
    let b = reg.resolve("embedding/qwen3-8b", None).unwrap();
    assert_eq!(a.wire_model, b.wire_model);
    assert_ne!(a.target.base_url, b.target.base_url);
    assert_ne!(a.model, b.model, "cache keys differ");
    assert_eq!(
        a.target.url_for("/v1/chat/completions"),
        "http://192.168.1.10:8080/v1/chat/completions"
    );
}

#[test]
fn model_part_keeps_slashes_and_colons() {
    let r = fleet()
        .resolve("sam-desktop/org/Qwen3-8B:Q4_K_M", None)
        .unwrap();
    assert_eq!(r.wire_model, "org/Qwen3-8B:Q4_K_M");
    assert_eq!(r.provider, pid("sam-desktop"));
}

#[test]
fn cloud_provider_gets_bearer_and_versioned_base() {
    let r = fleet().resolve("deepseek/deepseek-chat", None).unwrap();
    assert_eq!(r.lane, Lane::Cloud);
    assert_eq!(r.kind, ProviderKind::Openai);
    assert_eq!(
        r.target.url_for("/v1/chat/completions"),
        "https://api.deepseek.com/v1/chat/completions"
    );
    assert_eq!(
        r.target.url_for("/v1/models"),
        "https://api.deepseek.com/v1/models"
    );
    assert_eq!(r.target.headers[0].0, "authorization");
    assert_eq!(r.target.headers[0].1.expose(), "Bearer sk-secret-123");
    let dbg = format!("{r:?}");
    assert!(!dbg.contains("sk-secret"), "secret in Debug: {dbg}");
}

#[test]
fn legacy_bare_ids() {
    let reg = fleet();
    // Unknown everywhere → default provider (first enabled).
    let r = reg.resolve("qwen3-8b", None).unwrap();
    assert_eq!(r.provider, pid("sam-desktop"));
    assert_eq!(r.model.to_string(), "sam-desktop/qwen3-8b");
    // Listed only by deepseek's static models → deepseek (replaces the old prefix heuristic).
    let r = reg.resolve("deepseek-chat", None).unwrap();
    assert_eq!(r.provider, pid("deepseek"));
    // Served by inventory on embedding only → embedding.
    let mut inv = Inventory::new();
    inv.set_provider(pid("embedding"), vec![InventoryModel::new("nomic")]);
    inv.set_provider(pid("sam-desktop"), vec![InventoryModel::new("both")]);
    inv.set_provider(
        pid("embedding"),
        vec![InventoryModel::new("nomic"), InventoryModel::new("both")],
    );
    assert_eq!(
        reg.resolve("nomic", Some(&inv)).unwrap().provider,
        pid("embedding")
    );
    // Served by the default and another → default wins.
    assert_eq!(
        reg.resolve("both", Some(&inv)).unwrap().provider,
        pid("sam-desktop")
    );
    // Disabled providers' inventory is ignored.
    let mut inv = Inventory::new();
    inv.set_provider(pid("old-box"), vec![InventoryModel::new("legacy-only")]);
    assert_eq!(
        reg.resolve("legacy-only", Some(&inv)).unwrap().provider,
        pid("sam-desktop")
    );
}

#[test]
fn slash_ids_with_unknown_first_segment() {
    let reg = fleet();
    match reg.resolve("nosuch/model", None) {
        Err(ResolveError::UnknownProvider { provider, known }) => {
            assert_eq!(provider, "nosuch");
            assert_eq!(
                known,
                vec!["sam-desktop", "embedding", "deepseek", "old-box", "office"]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.resolve("Org/Model", None),
        Err(ResolveError::UnknownProvider { .. })
    ));
    // ...unless a host actually serves that HF-style bare id.
    let mut inv = Inventory::new();
    inv.set_provider(
        pid("embedding"),
        vec![InventoryModel::new("unsloth/Qwen3-8B-GGUF")],
    );
    let r = reg.resolve("unsloth/Qwen3-8B-GGUF", Some(&inv)).unwrap();
    assert_eq!(r.provider, pid("embedding"));
    assert_eq!(r.wire_model, "unsloth/Qwen3-8B-GGUF");
}

#[test]
fn typed_errors() {
    let reg = fleet();
    assert_eq!(
        reg.resolve("old-box/qwen", None),
        Err(ResolveError::ProviderDisabled {
            provider: "old-box".into()
        })
    );
    assert_eq!(
        reg.resolve("office/sam-desktop/qwen", None),
        Err(ResolveError::GatewayOffline {
            provider: "office".into()
        })
    );
    assert!(matches!(
        reg.resolve("", None),
        Err(ResolveError::Malformed(_))
    ));
    assert!(matches!(
        reg.resolve("sam-desktop/", None),
        Err(ResolveError::Malformed(_))
    ));
    assert!(matches!(
        reg.resolve("a b", None),
        Err(ResolveError::Malformed(_))
    ));
    match reg.resolve("auto:code", None) {
        Err(ResolveError::Virtual(v)) => assert_eq!(v.policy(), Some("code")),
        other => panic!("{other:?}"),
    }
    let r: ModelRef = "nosuch/x".parse().unwrap();
    assert!(matches!(
        reg.endpoint(&r),
        Err(ResolveError::UnknownProvider { .. })
    ));
    let r: ModelRef = "embedding/bge-m3".parse().unwrap();
    assert!(reg.endpoint(&r).unwrap().target.via_sidecar);
}

#[test]
fn defaults_are_applied() {
    let reg = fleet();
    let sam = &reg.providers()[0];
    assert_eq!(
        sam.base_url, "http://192.168.1.10:8080",
        "trailing slash stripped"
    );
    assert_eq!(sam.label, "Sam's desktop");
    assert!(sam.enabled && sam.is_default);
    assert_eq!(sam.timeouts.first_byte, Duration::from_secs(120));
    assert_eq!(sam.timeouts.connect, Duration::from_secs(5));
    assert_eq!(sam.timeouts.idle, Duration::from_secs(60));
    assert_eq!(sam.timeouts.total, None);
    assert_eq!(sam.gpu_label.as_deref(), Some("RTX 5090"));
    let ds = reg.provider(&pid("deepseek")).unwrap();
    assert_eq!(ds.label, "deepseek");
    assert_eq!(ds.timeouts.first_byte, Duration::from_secs(60));
    assert_eq!(reg.default_provider().id, pid("sam-desktop"));
    assert_eq!(
        RegistryView::provider_ids(&reg),
        vec![pid("sam-desktop"), pid("embedding"), pid("deepseek")]
    );
    assert_eq!(
        reg.provider_label(&pid("sam-desktop")).as_deref(),
        Some("Sam's desktop")
    );
}

#[test]
fn explicit_default_timeouts_lane_and_headers() {
    let json = r#"{ "providers": [
      { "id": "a", "kind": "llama-swap", "base_url": "http://a" },
      { "id": "b", "kind": "llama-server", "base_url": "https://b:1/x/", "default": true,
        "lane": "cloud", "max_concurrency": 2,
        "timeouts": { "connect_ms": 100, "first_byte_ms": 200, "idle_ms": 300, "total_ms": 400 },
        "headers": { "X-Org": "{env:ORG}" },
        "models": [ { "id": "m", "context_length": 4096, "tags": ["code"], "input_price_per_mtok": 0.5 } ] }
    ], "gateway": { "listen": "127.0.0.1:9503", "api_keys": ["k1"], "admin_token": "t", "max_body_bytes": 1000 },
       "store": "sqlite://boo.db", "policies": [ { "name": "code" } ], "default_model": "b/m" }"#;
    let loaded = from_json_str(json, &MapEnv::new().with("ORG", "acme")).unwrap();
    assert!(loaded.warnings.is_empty());
    let reg = loaded.registry;
    assert_eq!(reg.default_provider().id, pid("b"));
    let b = reg.provider(&pid("b")).unwrap();
    assert_eq!(b.base_url, "https://b:1/x");
    assert_eq!(b.lane, Lane::Cloud);
    assert_eq!(b.max_concurrency, Some(2));
    assert_eq!(b.timeouts.total, Some(Duration::from_millis(400)));
    assert_eq!(b.timeouts.first_byte, Duration::from_millis(200));
    assert_eq!(b.headers[0].0, "x-org");
    assert_eq!(b.headers[0].1.expose(), "acme");
    assert_eq!(b.models[0].context_length, Some(4096));
    assert_eq!(reg.gateway().listen.as_deref(), Some("127.0.0.1:9503"));
    assert_eq!(reg.gateway().api_keys[0].expose(), "k1");
    assert_eq!(reg.store(), Some("sqlite://boo.db"));
    assert_eq!(reg.policies().len(), 1);
    assert_eq!(reg.default_model(), Some("b/m"));
    let r = reg.resolve("qwen", None).unwrap();
    assert_eq!(
        r.target.url_for("/v1/chat/completions"),
        "https://b:1/x/v1/chat/completions"
    );
    assert_eq!(
        r.target.headers,
        vec![("x-org".to_string(), Secret::new("acme"))]
    );
}

#[test]
fn env_substitution_and_unset_warnings() {
    let loaded = from_json_str(FLEET, &MapEnv::new()).unwrap();
    assert_eq!(
        loaded.warnings,
        vec![Warning::UnsetEnv {
            var: "DEEPSEEK_API_KEY".into(),
            path: "$.providers[2].api_key".into()
        }]
    );
    assert!(loaded.warnings[0].to_string().contains("DEEPSEEK_API_KEY"));
    let ds = loaded.registry.provider(&pid("deepseek")).unwrap();
    assert!(ds.api_key.is_none());
    // Substitution happens everywhere, before validation: URL from env.
    let json = r#"{ "providers": [ { "id": "h", "kind": "llama-swap", "base_url": "http://{env:HOST}:8080" } ] }"#;
    let reg = from_json_str(json, &MapEnv::new().with("HOST", "10.1.1.1"))
        .unwrap()
        .registry;
    assert_eq!(reg.providers()[0].base_url, "http://10.1.1.1:8080");
    // An unset variable that empties a required field names the variable.
    let json =
        r#"{ "providers": [ { "id": "h", "kind": "llama-swap", "base_url": "{env:SWAP_URL}" } ] }"#;
    let p = problems(json, &MapEnv::new());
    assert!(
        has(&p, "$.providers[0].base_url", "SWAP_URL is not set"),
        "{p:?}"
    );
    // Partially emptied URL also names it.
    let json = r#"{ "providers": [ { "id": "h", "kind": "llama-swap", "base_url": "http://{env:HOST}" } ] }"#;
    let p = problems(json, &MapEnv::new());
    assert!(
        has(&p, "$.providers[0].base_url", "HOST is not set"),
        "{p:?}"
    );
}

#[test]
fn five_mistakes_are_all_reported_with_paths() {
    let json = r#"{
      "providers": [
        { "id": "Sam Desktop", "kind": "llama-swap", "base_url": "http://a" },
        { "id": "b", "kind": "ollama", "base_url": "http://b" },
        { "id": "c", "kind": "llama-swap", "base_url": "ftp://c", "colour": "red" },
        { "id": "c", "kind": "openai", "base_url": "https://d/v1", "sidecar": { "url": "http://e" } }
      ]
    }"#;
    let p = problems(json, &MapEnv::new());
    assert!(
        has(&p, "$.providers[0].id", "invalid provider id"),
        "{p:#?}"
    );
    assert!(
        has(&p, "$.providers[1].kind", "unknown kind \"ollama\""),
        "{p:#?}"
    );
    assert!(
        has(&p, "$.providers[2].base_url", "http:// or https://"),
        "{p:#?}"
    );
    assert!(has(&p, "$.providers[2].colour", "unknown key"), "{p:#?}");
    assert!(
        has(&p, "$.providers[3].id", "duplicate provider id \"c\""),
        "{p:#?}"
    );
    assert!(
        has(&p, "$.providers[3].sidecar", "only allowed on llama-swap"),
        "{p:#?}"
    );
    assert_eq!(p.len(), 6, "{p:#?}");
}

#[test]
fn default_rules() {
    let several = r#"{ "providers": [
      { "id": "a", "kind": "llama-swap", "base_url": "http://a", "default": true },
      { "id": "b", "kind": "llama-swap", "base_url": "http://b", "default": true } ] }"#;
    assert!(has(
        &problems(several, &MapEnv::new()),
        "$.providers[1].default",
        "several providers"
    ));
    let disabled_default = r#"{ "providers": [
      { "id": "a", "kind": "llama-swap", "base_url": "http://a", "default": true, "enabled": false },
      { "id": "b", "kind": "llama-swap", "base_url": "http://b" } ] }"#;
    assert!(has(
        &problems(disabled_default, &MapEnv::new()),
        "$.providers[0].default",
        "must be enabled"
    ));
    let none_enabled = r#"{ "providers": [
      { "id": "a", "kind": "llama-swap", "base_url": "http://a", "enabled": false } ] }"#;
    assert!(has(
        &problems(none_enabled, &MapEnv::new()),
        "$.providers",
        "no enabled provider"
    ));
    let first_enabled = r#"{ "providers": [
      { "id": "a", "kind": "llama-swap", "base_url": "http://a", "enabled": false },
      { "id": "b", "kind": "llama-swap", "base_url": "http://b" } ] }"#;
    let reg = from_json_str(first_enabled, &MapEnv::new())
        .unwrap()
        .registry;
    assert_eq!(reg.default_provider().id, pid("b"));
    assert!(!reg.providers()[0].is_default);
}

#[test]
fn structural_errors() {
    let e = MapEnv::new();
    assert!(has(&problems("{}", &e), "$.providers", "is required"));
    assert!(has(
        &problems(r#"{"providers": []}"#, &e),
        "$.providers",
        "at least one"
    ));
    assert!(has(
        &problems(r#"{"providers": {}, "extra": 1}"#, &e),
        "$.extra",
        "unknown key"
    ));
    assert!(has(&problems("[]", &e), "$", "expected an object"));
    let p = problems(
        r#"{"providers": [ { "id": "a", "kind": "llama-swap", "base_url": "http://a",
           "enabled": "yes", "max_concurrency": 0, "timeouts": { "connect_ms": -1, "nope": 1 },
           "headers": { "bad name": "x", "ok": "a\nb" }, "lane": "fast",
           "models": [ 3, "", { "id": "m", "extra": 1 } ],
           "sidecar": { "url": "http://s", "models": [1] } } ],
           "gateway": { "listen": "nowhere", "api_keys": "k" }, "store": "mysql://x", "policies": {} }"#,
        &e,
    );
    for (path, needle) in [
        ("$.providers[0].enabled", "true or false"),
        ("$.providers[0].max_concurrency", "positive integer"),
        ("$.providers[0].timeouts.connect_ms", "positive integer"),
        ("$.providers[0].timeouts.nope", "unknown key"),
        (
            "$.providers[0].headers[\"bad name\"]",
            "invalid header name",
        ),
        ("$.providers[0].headers.ok", "line break"),
        ("$.providers[0].lane", "unknown lane"),
        ("$.providers[0].models[0]", "expected a model id"),
        ("$.providers[0].models[1]", "must not be empty"),
        ("$.providers[0].models[2].extra", "unknown key"),
        ("$.providers[0].sidecar.models[0]", "expected a string"),
        ("$.gateway.listen", "ip:port"),
        ("$.gateway.api_keys", "expected an array"),
        ("$.store", "sqlite:"),
        ("$.policies", "expected an array"),
    ] {
        assert!(has(&p, path, needle), "missing {path} / {needle}: {p:#?}");
    }
    match from_json_str("{ \"providers\": [", &e) {
        Err(ConfigError::Syntax { line: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn secrets_never_reach_error_messages() {
    let json = r#"{ "providers": [ { "id": "a", "kind": "openai", "base_url": "nope",
        "api_key": "sk-bad key{env:K}" } ] }"#;
    let err = from_json_str(json, &MapEnv::new().with("K", "TOPSECRET")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("$.providers[0].api_key"), "{text}");
    assert!(
        !text.contains("TOPSECRET") && !text.contains("sk-bad"),
        "{text}"
    );
}

const LEGACY_EQUIVALENT: &str = r#"{
  "providers": [
    { "id": "local", "label": "Local", "kind": "llama-swap", "base_url": "http://10.0.0.5:8080",
      "sidecar": { "url": "http://10.0.0.5:8081", "models": ["bge-m3"] } },
    { "id": "deepseek", "label": "DeepSeek", "kind": "openai", "base_url": "https://api.deepseek.com/v1",
      "api_key": "{env:DEEPSEEK_API_KEY}", "models": ["deepseek-chat", "deepseek-reasoner"] }
  ],
  "default_model": "qwen3-8b"
}"#;

#[test]
fn legacy_env_equals_equivalent_file() {
    let env = MapEnv::new()
        .with("LLAMA_SWAP_URL", "http://10.0.0.5:8080/")
        .with("LLAMA_SIDECAR_URL", "http://10.0.0.5:8081")
        .with("LLAMA_SIDECAR_MODELS", "bge-m3")
        .with("DEFAULT_MODEL", "qwen3-8b")
        .with("DEEPSEEK_API_KEY", "sk-legacy");
    let legacy = load(ConfigSource::Discover { cli: None }, &env).unwrap();
    assert_eq!(legacy.origin, "legacy environment");
    let file = from_json_str(LEGACY_EQUIVALENT, &env).unwrap();
    assert_eq!(legacy.registry, file.registry);
    let r = legacy.registry.resolve("qwen3-8b", None).unwrap();
    assert_eq!(r.model.to_string(), "local/qwen3-8b");
    assert_eq!(r.target.base_url, "http://10.0.0.5:8080");
    assert_eq!(
        legacy
            .registry
            .resolve("bge-m3", None)
            .unwrap()
            .target
            .base_url,
        "http://10.0.0.5:8081"
    );
    assert_eq!(
        legacy
            .registry
            .resolve("deepseek-reasoner", None)
            .unwrap()
            .provider,
        pid("deepseek")
    );
}

#[test]
fn legacy_minimal_and_empty_env() {
    let only_url = MapEnv::new().with("LLAMA_SWAP_URL", "http://h:9000");
    let reg = load(ConfigSource::LegacyEnv, &only_url).unwrap().registry;
    assert_eq!(reg.providers().len(), 1);
    assert_eq!(reg.default_provider().base_url, "http://h:9000");
    let loaded = load(ConfigSource::LegacyEnv, &MapEnv::new()).unwrap();
    assert_eq!(
        loaded.registry.default_provider().base_url,
        DEFAULT_LLAMA_SWAP_URL
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.to_string().contains("LLAMA_SWAP_URL"))
    );
    let bad = MapEnv::new().with("LLAMA_SWAP_URL", "localhost:8080");
    let err = load(ConfigSource::LegacyEnv, &bad).unwrap_err();
    assert!(err.to_string().contains("base_url"), "{err}");
}

#[test]
fn discovery_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(
        &a,
        r#"{"providers":[{"id":"from-a","kind":"llama-swap","base_url":"http://a"}]}"#,
    )
    .unwrap();
    std::fs::write(
        &b,
        r#"{"providers":[{"id":"from-b","kind":"llama-swap","base_url":"http://b"}]}"#,
    )
    .unwrap();
    let env = MapEnv::new()
        .with("BOOCONTROL_CONFIG", a.to_str().unwrap())
        .with("LLAMA_PROVIDERS_PATH", b.to_str().unwrap())
        .with("LLAMA_SWAP_URL", "http://legacy");
    let first = |cli: Option<&std::path::Path>, env: &MapEnv| {
        load(
            ConfigSource::Discover {
                cli: cli.map(Into::into),
            },
            env,
        )
        .unwrap()
        .registry
        .default_provider()
        .id
        .to_string()
    };
    assert_eq!(first(Some(&b), &env), "from-b");
    assert_eq!(first(None, &env), "from-a");
    let mut env2 = env.clone();
    env2.0.remove("BOOCONTROL_CONFIG");
    assert_eq!(first(None, &env2), "from-b");
    // Missing LLAMA_PROVIDERS_PATH file → legacy env, with a warning.
    env2.0.insert(
        "LLAMA_PROVIDERS_PATH".into(),
        dir.path().join("missing.json").to_str().unwrap().into(),
    );
    let loaded = load(ConfigSource::Discover { cli: None }, &env2).unwrap();
    assert_eq!(loaded.registry.default_provider().id.as_str(), "local");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.to_string().contains("does not exist"))
    );
    // Missing explicit file is an error.
    let missing = dir.path().join("nope.json");
    assert!(matches!(
        load(ConfigSource::Discover { cli: Some(missing) }, &env2),
        Err(ConfigError::NotFound { .. })
    ));
}

#[test]
fn failed_reload_keeps_old_registry_and_reports_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boo.json");
    std::fs::write(&path, FLEET).unwrap();
    let handle = RegistryHandle::new(
        load(ConfigSource::File(path.clone()), &env())
            .unwrap()
            .registry,
    );
    let held = handle.load();
    std::fs::write(
        &path,
        r#"{"providers":[{"id":"X","kind":"k","base_url":"b"}]}"#,
    )
    .unwrap();
    let err = handle
        .reload(ConfigSource::File(path.clone()), &env())
        .unwrap_err();
    assert_eq!(err.problems().len(), 3, "{err}");
    assert_eq!(*handle.load(), *held, "old registry kept");
    std::fs::write(
        &path,
        r#"{"providers":[{"id":"new","kind":"llama-swap","base_url":"http://n"}]}"#,
    )
    .unwrap();
    let clone = handle.clone();
    clone.reload(ConfigSource::File(path), &env()).unwrap();
    assert_eq!(handle.load().default_provider().id.as_str(), "new");
    assert_eq!(
        held.default_provider().id.as_str(),
        "sam-desktop",
        "readers keep their snapshot"
    );
}

#[test]
fn example_file_loads() {
    let text = include_str!("../../examples/boocontrol.example.json");
    let loaded = from_json_str(text, &MapEnv::new().with("DEEPSEEK_API_KEY", "sk-x")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let reg = loaded.registry;
    let ids: Vec<_> = reg.providers().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["sam-desktop", "embedding", "deepseek"]);
    let r = reg.resolve("embedding/deepseek-r1-qwen3-8b", None).unwrap();
    assert_eq!(r.provider, pid("embedding"));
    assert!(!r.target.via_sidecar);
    assert!(
        reg.resolve("embedding/bge-m3", None)
            .unwrap()
            .target
            .via_sidecar
    );
    assert_eq!(
        reg.resolve("deepseek/deepseek-chat", None).unwrap().lane,
        Lane::Cloud
    );
}

#[test]
fn schema_matches_the_validator_keys() {
    let s = json_schema();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let sorted = |a: &[&str]| {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(keys(&s), sorted(TOP_KEYS));
    assert_eq!(s["additionalProperties"], false);
    let defs = &s["$defs"];
    for (name, known) in [
        ("ProviderFile", PROVIDER_KEYS),
        ("SidecarFile", SIDECAR_KEYS),
        ("TimeoutsFile", TIMEOUT_KEYS),
        ("ModelMetaFile", MODEL_KEYS),
        ("GatewayFile", GATEWAY_KEYS),
    ] {
        assert_eq!(keys(&defs[name]), sorted(known), "{name}");
        assert_eq!(defs[name]["additionalProperties"], false, "{name}");
    }
    let kinds = defs["KindFile"].to_string();
    for k in ProviderKind::ALL {
        assert!(kinds.contains(&format!("\"{}\"", k.as_str())), "{kinds}");
    }
}

#[test]
fn url_for_follows_the_v1_rule_per_kind() {
    let t = |kind, base: &str| Target {
        base_url: base.to_owned(),
        via_sidecar: false,
        kind,
        headers: vec![],
    };
    let cloud = t(ProviderKind::Openai, "https://api.deepseek.com/v1");
    assert_eq!(
        cloud.url_for("/v1/embeddings"),
        "https://api.deepseek.com/v1/embeddings"
    );
    assert_eq!(
        cloud.url_for("v1/models"),
        "https://api.deepseek.com/v1/models"
    );
    assert_eq!(cloud.url_for("/v1"), "https://api.deepseek.com/v1");
    // Only a whole "/v1" segment is dropped.
    assert_eq!(cloud.url_for("/v10/x"), "https://api.deepseek.com/v1/v10/x");
    assert_eq!(
        cloud.url_for("/health"),
        "https://api.deepseek.com/v1/health"
    );
    for kind in [
        ProviderKind::LlamaSwap,
        ProviderKind::LlamaServer,
        ProviderKind::Gateway,
    ] {
        let local = t(kind, "http://h:8080");
        assert_eq!(
            local.url_for("/v1/chat/completions"),
            "http://h:8080/v1/chat/completions"
        );
        assert_eq!(local.url_for("/running"), "http://h:8080/running");
    }
}
