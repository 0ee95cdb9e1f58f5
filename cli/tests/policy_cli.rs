//! `booctl policy|route explain|models` against a real gateway (`run_on`) over fleet-sim.

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};
use boo_gateway_http::RunOptions;
use boo_provider_registry::{MapEnv, from_json_str};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

const GUARD: Duration = Duration::from_secs(60);

async fn booctl(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_booctl"));
    cmd.args(args).env_clear().kill_on_drop(true);
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("booctl exits")
        .expect("run booctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn policies_are_listed_set_explained_and_deleted_from_the_cli() {
    let mut small = ModelSpec::new("tiny-4k");
    small.n_ctx = 4096;
    let mut big = ModelSpec::new("big");
    big.n_ctx = 32768;
    let host = start_host(
        HostSpec::llama_swap("desk", ApiGen::Current, vec![small, big]).with_time_scale(0.01),
    )
    .await
    .unwrap();
    let json = format!(
        r#"{{ "providers": [{{ "id": "desk", "kind": "llama-swap", "base_url": "{}" }}],
             "policies": [{{ "name": "auto", "candidates": ["desk/tiny-4k", "desk/big"], "order": ["priority"] }}] }}"#,
        host.base_url()
    );
    let reg = from_json_str(&json, &MapEnv::new()).unwrap().registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(100);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));

    let out = booctl(&["policy", "list", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("auto") && s.contains("config") && s.contains("desk/tiny-4k"),
        "{s}"
    );

    // Explain a 10k-token prompt once the inventory is in: the 4k model is skipped.
    let mut explained = String::new();
    for _ in 0..200 {
        let out = booctl(&[
            "route",
            "explain",
            "auto",
            "--prompt-tokens",
            "10000",
            "--json",
            "--gateway",
            &url,
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["attempts"][0]["model"] == "desk/big" {
            explained = text(&out.stdout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        explained.contains("tiny-4k"),
        "the skipped model is explained: {explained}"
    );
    assert_eq!(
        host.stats().inference_requests(),
        0,
        "explain sends nothing"
    );

    // Set a new policy, see it in `models`, then delete it.
    let out = booctl(&[
        "policy",
        "set",
        "auto:fast",
        "--policy",
        r#"{"candidates":["desk/big"]}"#,
        "--gateway",
        &url,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = booctl(&["models", "--gateway", &url]).await;
    assert!(
        text(&out.stdout).lines().any(|l| l == "auto:fast"),
        "{}",
        text(&out.stdout)
    );
    let out = booctl(&[
        "policy",
        "set",
        "auto:bad",
        "--policy",
        r#"{"candidates":[]}"#,
        "--gateway",
        &url,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("candidates"),
        "{}",
        text(&out.stderr)
    );
    let out = booctl(&["policy", "delete", "auto:fast", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = booctl(&["policy", "show", "auto:fast", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = booctl(&["models", "--scores", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("desk/big"),
        "{}",
        text(&out.stdout)
    );
}

/// A gateway with an admin token and a SQLite store: `set`/`delete` need the token, policies
/// survive a restart, config policies can be overridden but not deleted.
#[tokio::test]
async fn policy_changes_need_the_admin_token_and_survive_a_gateway_restart() {
    let host = start_host(
        HostSpec::llama_swap("desk", ApiGen::Current, vec![ModelSpec::new("big")])
            .with_time_scale(0.01),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("boo.db").display());
    let json = format!(
        r#"{{ "gateway": {{ "admin_token": "adm1n" }},
             "providers": [{{ "id": "desk", "kind": "llama-swap", "base_url": "{}" }}],
             "policies": [{{ "name": "auto", "candidates": ["desk/big"] }}] }}"#,
        host.base_url()
    );
    let start = || async {
        let reg = from_json_str(&json, &MapEnv::new()).unwrap().registry;
        let mut opts = RunOptions::new(Arc::new(reg));
        opts.poll_every = Duration::from_millis(100);
        opts.store = Some(boo_gateway_http::StoreOptions {
            store: boo_gateway_http::StoreTarget::Url(store_url.clone()),
            batch: Default::default(),
            retention: None,
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(boo_gateway_http::run_on(l, opts, async {
            let _ = rx.await;
        }));
        (url, tx, task)
    };
    let (url, tx, task) = start().await;
    let fast = r#"{"candidates":["desk/big"],"order":["fastest"]}"#;

    let out = booctl(&[
        "policy",
        "set",
        "auto:fast",
        "--policy",
        fast,
        "--gateway",
        &url,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("401") && err.contains("--admin-token"),
        "{err}"
    );

    let set = |name: &'static str, policy: &'static str| {
        let url = url.clone();
        async move {
            booctl(&[
                "policy",
                "set",
                name,
                "--policy",
                policy,
                "--gateway",
                &url,
                "--admin-token",
                "adm1n",
            ])
            .await
        }
    };
    let out = set("auto:fast", fast).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "set auto:fast");
    let out = set(
        "auto",
        r#"{"candidates":["desk/big"],"order":["priority"]}"#,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("overrides the config-file policy"),
        "{}",
        text(&out.stdout)
    );

    // Restart on the same store: both API policies are back.
    let _ = tx.send(());
    let _ = tokio::time::timeout(GUARD, task).await;
    let (url, _tx, _task) = start().await;
    let out = booctl(&["policy", "list", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    let origin = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(origin("auto:fast").as_deref(), Some("api"), "{list}");
    assert_eq!(origin("auto").as_deref(), Some("api"), "{list}");

    let del = |name: &'static str| {
        let url = url.clone();
        async move {
            booctl(&[
                "policy",
                "delete",
                name,
                "--gateway",
                &url,
                "--admin-token",
                "adm1n",
            ])
            .await
        }
    };
    let out = del("auto").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("config-file policy applies again"));
    // Now only the config version is left: it cannot be deleted here.
    let out = del("auto").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("409") && err.contains("config file"), "{err}");
}
