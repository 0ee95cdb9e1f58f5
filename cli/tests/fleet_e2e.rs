//! End to end: the built `booctl` against the real control API (`boo_gateway_http::control`)
//! following a fleet-sim llama-swap host over 127.0.0.1.

use std::process::{Output, Stdio};
use std::time::Duration;

use boo_fleet_core::{FleetSnapshot, LivenessState, ModelState, ReconnectPolicy};
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::control::{ControlApi, ControlConfig, HostTarget};
use tokio::io::AsyncReadExt;

/// Failure guard only: every wait below normally ends well within a second.
const GUARD: Duration = Duration::from_secs(60);

struct Running {
    _api: ControlApi,
    url: String,
    sim: SimHost,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(admin_token: Option<&str>) -> Running {
    let spec = HostSpec::llama_swap(
        "gpu",
        ApiGen::Current,
        vec![ModelSpec::new("alpha"), ModelSpec::new("beta")],
    )
    .with_time_scale(0.001);
    let sim = start_host(spec).await.expect("sim host");
    let cfg = ControlConfig {
        policy: ReconnectPolicy {
            base_ms: 40,
            max_ms: 200,
            jitter_max: 0.5,
            breaker_threshold: 3,
            probe_interval_ms: 400,
        },
        perf_interval: Duration::from_millis(200),
        admin_token: admin_token.map(str::to_owned),
        ..ControlConfig::default()
    };
    let api = ControlApi::start(
        cfg,
        vec![HostTarget::llama_swap("gpu", &sim.base_url())],
        None,
    )
    .await
    .expect("control plane");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = api.clone();
    tokio::spawn(async move {
        a.serve(listener, async {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        _api: api,
        url,
        sim,
        _stop: tx,
    }
}

fn command(args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_booctl"));
    cmd.args(args).env_clear().kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

async fn booctl(args: &[&str], envs: &[(&str, &str)]) -> Output {
    tokio::time::timeout(GUARD, command(args, envs).output())
        .await
        .expect("booctl exits")
        .expect("run booctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `booctl fleet status --json` until `pred` holds for the snapshot.
async fn status_until(url: &str, what: &str, pred: impl Fn(&FleetSnapshot) -> bool) {
    let poll = async {
        loop {
            let out = booctl(&["fleet", "status", "--json", "--gateway", url], &[]).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let snap: FleetSnapshot = serde_json::from_slice(&out.stdout).unwrap();
            if pred(&snap) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(GUARD, poll)
        .await
        .unwrap_or_else(|_| panic!("fleet never reached: {what}"));
}

fn model_state(snap: &FleetSnapshot, model: &str) -> Option<ModelState> {
    snap.host("gpu")?.models.get(model).map(|m| m.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_warm_and_unload_against_the_real_control_api() {
    let gw = start(None).await;
    let url = gw.url.clone();
    status_until(&url, "gpu connected", |s| {
        s.host("gpu")
            .is_some_and(|h| h.liveness == LivenessState::Connected)
    })
    .await;

    // A live watch (plain frames on a pipe) runs while we warm.
    let mut watch = command(&["fleet", "watch", "--gateway", &url], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch_out = watch.stdout.take().unwrap();

    let out = booctl(&["warm", "gpu/alpha", "--gateway", &url], &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("warm alpha on gpu: queued at position"),
        "{stdout}"
    );

    // The watch redraws until a frame shows alpha ready on gpu.
    let mut seen = String::new();
    let alpha_ready = |s: &str| {
        s.split("\n\n").any(|frame| {
            frame.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.windows(2).any(|p| p == ["alpha", "ready"])
            })
        })
    };
    tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 8192];
        while !alpha_ready(&seen) {
            let n = watch_out.read(&mut buf).await.unwrap();
            assert!(n > 0, "watch exited early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watch never showed alpha ready:\n{seen}"));
    let pid = watch.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let done = tokio::time::timeout(GUARD, watch.wait_with_output())
        .await
        .expect("watch exits on Ctrl-C")
        .unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(gw.sim.stats().requests("/v1/chat/completions") >= 1);

    // The table from `fleet status` agrees.
    let out = booctl(&["fleet", "status", "--gateway", &url], &[]).await;
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("gpu") && l.contains("connected")),
        "{table}"
    );

    // Unload everything; the fleet shows alpha no longer loaded.
    let out = booctl(&["unload", "gpu", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unload all models on gpu"));
    status_until(&url, "alpha unloaded", |s| {
        !model_state(s, "alpha").is_some_and(|m| m.is_loaded())
    })
    .await;

    // Logs answer for a known host; an unknown one is a clear error.
    let out = booctl(&["logs", "gpu", "--tail", "5", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().count() <= 5);
    let out = booctl(&["logs", "nope", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_by_the_real_gateway() {
    let gw = start(Some("s3cret-admin")).await;
    let url = gw.url.clone();
    status_until(&url, "gpu connected", |s| {
        s.host("gpu")
            .is_some_and(|h| h.liveness == LivenessState::Connected)
    })
    .await;
    let out = booctl(&["warm", "gpu/beta", "--gateway", &url], &[]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--admin-token") && err.contains("BOOCONTROL_ADMIN_TOKEN"),
        "{err}"
    );
    let out = booctl(
        &["warm", "gpu/beta", "--gateway", &url],
        &[("BOOCONTROL_ADMIN_TOKEN", "s3cret-admin")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("s3cret"));
    status_until(&url, "beta ready", |s| {
        model_state(s, "beta") == Some(ModelState::Ready)
    })
    .await;
}
