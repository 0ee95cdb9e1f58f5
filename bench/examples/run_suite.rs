//! Runs a suite directly against one host (no gateway), prints the result table and writes
//! the JSON result. For trying suites by hand and for the real-llama-server table.
//!
//! ```sh
//! cargo run --release -p boo-bench --example run_suite -- bench/suites/chat-grid.yaml \
//!     --url http://127.0.0.1:18093 --model gemma3-270m --kind llama-server --out /tmp/run.json
//! ```
//!
//! Compare two result files: `--compare BASELINE.json CURRENT.json`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use boo_bench::{
    Engine, HostKind, HttpClient, HttpLoader, NoFleet, RunRequest, RunResult, Suite, Target,
    compare_runs,
};
use boo_fleet_core::{InMemoryHostAccess, Lane};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--compare") {
        let read = |p: &String| -> anyhow::Result<RunResult> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
            Ok(RunResult::from_json(&text)?)
        };
        let (Some(a), Some(b)) = (args.get(1), args.get(2)) else {
            bail!("usage: --compare BASELINE.json CURRENT.json");
        };
        let c = compare_runs(&read(a)?, &read(b)?, None);
        print!("{}", boo_bench::report::comparison_table(&c));
        return Ok(());
    }
    let mut suite_path = None;
    let (mut url, mut model, mut kind, mut out) = (None, None, HostKind::LlamaSwap, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => url = it.next(),
            "--model" => model = it.next(),
            "--kind" => {
                kind = match it.next().as_deref() {
                    Some("llama-swap") => HostKind::LlamaSwap,
                    Some("llama-server") => HostKind::LlamaServer,
                    Some("openai") => HostKind::Openai,
                    other => bail!("--kind: llama-swap | llama-server | openai, got {other:?}"),
                }
            }
            "--out" => out = it.next(),
            s if !s.starts_with("--") => suite_path = Some(s.to_owned()),
            s => bail!("unknown option {s}"),
        }
    }
    let (Some(path), Some(url), Some(model)) = (suite_path, url, model) else {
        bail!(
            "usage: run_suite SUITE.yaml --url URL --model NAME [--kind llama-swap|llama-server|openai] [--out FILE]"
        );
    };
    let suite = Suite::from_yaml(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?,
    )?;
    let target = Target {
        id: model.clone(),
        provider: url.clone(),
        model,
        base_url: url,
        kind,
        lane: Lane::Local,
        cloud_budget: None,
        api_key: std::env::var("BENCH_API_KEY").ok(),
    };
    let engine = Engine::new(
        Arc::new(HttpClient::new()),
        Arc::new(InMemoryHostAccess::new(60_000)),
        Arc::new(HttpLoader::new(Duration::from_secs(600))),
        Arc::new(NoFleet),
    );
    let id = format!(
        "{}-{}",
        suite.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let progress = |p: &boo_bench::Progress| {
        if p.phase == boo_bench::Phase::CellDone {
            eprintln!(
                "  {} done: {}/{} ok, {:.1} tok/s",
                p.cell,
                p.done - p.errors,
                p.done,
                p.current_tps
            );
        }
    };
    let r = engine
        .run(
            RunRequest {
                id,
                suite,
                targets: vec![target],
                takeover: true,
            },
            &progress,
        )
        .await?;
    print!("{}", boo_bench::report::result_table(&r));
    println!("prompt sizing: {:?}", r.client.prompt_sizing);
    if let Some(out) = out {
        std::fs::write(&out, r.to_json()?).with_context(|| format!("writing {out}"))?;
        eprintln!("wrote {out}");
    }
    Ok(())
}
