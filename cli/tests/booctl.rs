//! Runs the built `booctl` binary against good and bad config files.

use std::path::Path;
use std::process::{Command, Output};

fn booctl(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_booctl"));
    cmd.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run booctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/boocontrol.example.json")
        .display()
        .to_string()
}

#[test]
fn check_good_file_prints_provider_table() {
    let out = booctl(
        &["config", "check", "--config", &example()],
        &[("DEEPSEEK_API_KEY", "sk-never-printed")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for needle in [
        "sam-desktop",
        "embedding",
        "deepseek",
        "http://192.168.1.20:8081 (bge-m3)",
        "key ***",
    ] {
        assert!(stdout.contains(needle), "missing {needle}: {stdout}");
    }
    assert!(
        !stdout.contains("sk-never-printed") && !text(&out.stderr).contains("sk-never-printed")
    );
}

#[test]
fn check_bad_file_reports_all_five_mistakes_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{
          "providers": [
            { "id": "Sam Desktop", "kind": "llama-swap", "base_url": "http://a" },
            { "id": "b", "kind": "ollama", "base_url": "http://b" },
            { "id": "c", "kind": "llama-swap", "base_url": "ftp://c", "colour": "red" },
            { "id": "c", "kind": "llama-swap", "base_url": "http://d", "default": true },
            { "id": "e", "kind": "llama-swap", "base_url": "http://e", "default": true }
          ]
        }"#,
    )
    .unwrap();
    let out = booctl(&["config", "check", "--config", bad.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "$.providers[0].id: invalid provider id",
        "$.providers[1].kind: unknown kind \"ollama\"",
        "$.providers[2].base_url: must be an http:// or https:// URL",
        "$.providers[2].colour: unknown key",
        "$.providers[3].id: duplicate provider id \"c\"",
        "$.providers[4].default: several providers are marked default",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty(), "errors go to stderr");
}

#[test]
fn check_json_output_lists_problems() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"providers":[{"id":"a","kind":"llama-swap"}],"nope":1}"#,
    )
    .unwrap();
    let out = booctl(
        &[
            "--json",
            "config",
            "check",
            "--config",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["$.nope", "$.providers[0].base_url"]);
}

#[test]
fn missing_and_unparseable_files_exit_2() {
    let out = booctl(
        &["config", "check", "--config", "/nonexistent/boo.json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"providers\": [").unwrap();
    let out = booctl(
        &["config", "check"],
        &[("BOOCONTROL_CONFIG", bad.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn legacy_env_works_without_a_file() {
    let out = booctl(
        &["resolve", "qwen3-8b"],
        &[("LLAMA_SWAP_URL", "http://10.9.9.9:8080")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("model:      local/qwen3-8b"), "{stdout}");
    assert!(
        stdout.contains("target:     http://10.9.9.9:8080/v1/chat/completions"),
        "{stdout}"
    );
}

#[test]
fn resolve_prints_target_with_masked_key() {
    let out = booctl(
        &["resolve", "deepseek/deepseek-chat", "--config", &example()],
        &[("DEEPSEEK_API_KEY", "sk-very-secret")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("target:     https://api.deepseek.com/v1/chat/completions"),
        "{stdout}"
    );
    assert!(stdout.contains("authorization: ***"), "{stdout}");
    assert!(stdout.contains("lane:       cloud"), "{stdout}");
    assert!(!stdout.contains("sk-very-secret"));

    let out = booctl(
        &[
            "--json",
            "resolve",
            "embedding/deepseek-r1-qwen3-8b",
            "--config",
            &example(),
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["provider"], "embedding");
    assert_eq!(v["wire_model"], "deepseek-r1-qwen3-8b");
    assert_eq!(
        v["target_url"],
        "http://192.168.1.20:8080/v1/chat/completions"
    );
    assert_eq!(v["via_sidecar"], false);
}

#[test]
fn resolve_failures_exit_3() {
    let out = booctl(&["resolve", "nosuch/model", "--config", &example()], &[]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown provider \"nosuch\"") && stderr.contains("sam-desktop"),
        "{stderr}"
    );
    let out = booctl(&["resolve", "bad id", "--config", &example()], &[]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn example_and_schema_are_valid_json_and_example_checks() {
    let out = booctl(&["config", "example"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ex.json");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = booctl(
        &["config", "check", "--config", path.to_str().unwrap()],
        &[("DEEPSEEK_API_KEY", "k")],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));

    let out = booctl(&["config", "schema"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["$defs"]["ProviderFile"]["properties"]["base_url"].is_object());
}

#[test]
fn gateway_flag_reads_env_and_bad_usage_exits_2() {
    let out = booctl(&["config", "nonsense"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = booctl(&["--help"], &[("BOOCONTROL_URL", "http://10.1.1.1:9503")]);
    assert!(text(&out.stdout).contains("http://10.1.1.1:9503"));
}
