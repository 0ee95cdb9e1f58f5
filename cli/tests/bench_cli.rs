//! `booctl bench run|list|show|compare|baseline` end to end: the real binary against a real
//! gateway (`run_on`, fleet control plane on, SQLite store) following a fleet-sim host.

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::{RunOptions, StoreOptions, StoreTarget};
use boo_provider_registry::{MapEnv, from_json_str};
use boo_telemetry_store::{BatchConfig, Store};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

const GUARD: Duration = Duration::from_secs(120);
const TOKEN: &str = "cli-bench-token";
const SUITE: &str = "name: cli-tiny\ngrid:\n  prompt_tokens: [32]\n  max_tokens: [8]\n  concurrency: [1, 2]\n  repetitions: 3\n";

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

async fn gateway(dir: &tempfile::TempDir) -> (String, Arc<dyn Store>, SimHost) {
    let mut alpha = ModelSpec::new("alpha");
    alpha.gen_tps = 500.0;
    alpha.load_ms = 100;
    let sim = start_host(HostSpec::llama_swap("gpu", ApiGen::Current, vec![alpha]))
        .await
        .unwrap();
    let json = format!(
        r#"{{ "providers": [{{ "id": "gpu", "kind": "llama-swap", "base_url": "{}" }}],
             "gateway": {{ "admin_token": "{TOKEN}" }} }}"#,
        sim.base_url()
    );
    let reg = from_json_str(&json, &MapEnv::new()).unwrap().registry;
    let store = boo_telemetry_store::open(&format!("sqlite://{}/gw.db", dir.path().display()))
        .await
        .unwrap();
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.follow_fleet = true;
    opts.poll_every = Duration::from_millis(200);
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(store.clone()),
        batch: BatchConfig::default(),
        retention: None,
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(boo_gateway_http::run_on(l, opts, std::future::pending()));
    // wait until the control plane follows the host
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let out = booctl(&["fleet", "status", "--json", "--gateway", &url]).await;
        if text(&out.stdout).contains("connected") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "host never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (url, store, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_list_show_compare_and_baseline_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store, sim) = gateway(&dir).await;
    let suite = dir.path().join("suite.yaml");
    std::fs::write(&suite, SUITE).unwrap();
    let suite = suite.to_str().unwrap();
    let out_dir = dir.path().join("out");
    let out_s = out_dir.to_str().unwrap();

    // an invalid suite is refused locally, naming the field
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, SUITE.replace("[32]", "[0]")).unwrap();
    let out = booctl(&[
        "bench",
        "run",
        bad.to_str().unwrap(),
        "--target",
        "gpu/alpha",
        "--gateway",
        &url,
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("grid.prompt_tokens"),
        "{}",
        text(&out.stderr)
    );

    // without the admin token: refused with a hint
    let out = booctl(&[
        "bench",
        "run",
        suite,
        "--target",
        "gpu/alpha",
        "--gateway",
        &url,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("admin token"),
        "{}",
        text(&out.stderr)
    );

    let run = |extra: &'static [&'static str]| {
        let url = url.clone();
        let suite = suite.to_owned();
        let out_s = out_s.to_owned();
        async move {
            let mut args = vec![
                "bench",
                "run",
                &suite,
                "--target",
                "gpu/alpha",
                "--out",
                &out_s,
                "--gateway",
                &url,
                "--admin-token",
                TOKEN,
            ];
            args.extend_from_slice(extra);
            booctl(&args).await
        }
    };
    let out = run(&[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("p32-g8-c1") && stdout.contains("p32-g8-c2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("GEN TOK/S P50") && stdout.contains("status completed"),
        "{stdout}"
    );
    let first = stdout
        .split_whitespace()
        .nth(1)
        .expect("run id after `run`")
        .to_owned();
    for f in [
        "result.json",
        "ttft.svg",
        "ttft.png",
        "gen_tps.svg",
        "gen_tps.png",
    ] {
        let p = out_dir.join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{f} missing or empty"
        );
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["id"], first.as_str());
    assert!(
        result["samples"].as_array().unwrap().len() >= 9,
        "raw samples in the result file"
    );
    // the run is in the gateway's store
    assert!(store.bench_run(&first).await.unwrap().is_some());

    let out = booctl(&["bench", "list", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(
        list.contains(&first) && list.contains("cli-tiny") && list.contains("completed"),
        "{list}"
    );

    let out = booctl(&[
        "bench",
        "baseline",
        "set",
        &first,
        "--gateway",
        &url,
        "--admin-token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("baseline of 2 cell(s)"),
        "{}",
        text(&out.stdout)
    );

    // recent traffic from someone else: the CLI explains --takeover
    let chat = serde_json::json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    boo_fleet_sim::client::post_json(&sim.base_url(), "/v1/chat/completions", &chat)
        .await
        .unwrap();
    let mut refused = String::new();
    for _ in 0..100 {
        let out = run(&[]).await;
        if out.status.code() == Some(1) {
            refused = text(&out.stderr);
            break;
        }
        // the foreign request was not ingested yet and a run went through: try again
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused.contains("--takeover"), "{refused}");

    let out = run(&["--takeover"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout,
        text(&out.stderr)
    );
    let second = stdout.split_whitespace().nth(1).unwrap().to_owned();
    // compared with the baseline in the table, and a history chart was drawn
    assert!(
        stdout.contains("ok (") || stdout.contains("REGRESSION"),
        "{stdout}"
    );
    assert!(out_dir.join("history-gpu_alpha.png").exists());

    let out = booctl(&["bench", "compare", &first, &second, "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cmp = text(&out.stdout);
    assert!(
        cmp.contains("p32-g8-c1") && cmp.contains("GEN TOK/S"),
        "{cmp}"
    );

    let out = booctl(&["bench", "show", &second, "--json", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["id"], second.as_str());
    assert_eq!(
        v["result"]["baseline_verdicts"][0]["baseline_run"],
        first.as_str()
    );

    let out = booctl(&["bench", "show", "no-such-run", "--gateway", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such-run"),
        "{}",
        text(&out.stderr)
    );
}
