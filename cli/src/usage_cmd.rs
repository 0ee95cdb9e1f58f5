//! `booctl usage`: token aggregates from the gateway (`GET /api/usage`) by source, model or
//! provider over the last `--since` (e.g. `30m`, `24h`, `7d`).

use anyhow::Context as _;
use serde_json::Value;

use crate::Global;
use crate::activity_cmd::{encode, json_reply};
use crate::http::Client;
use crate::output::table;

/// Options of `booctl usage`.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Time range ending now: a number and s, m, h or d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Group by `source` (X-Boo-Source), `model` or `provider`.
    #[arg(long, default_value = "source", value_parser = ["source", "model", "provider"])]
    pub by: String,
}

fn num(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

/// Runs `booctl usage`.
pub fn run(args: &UsageArgs, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::new(&global.gateway, None)?;
        let path = format!(
            "/api/usage?group={}&since={}",
            encode(&args.by),
            encode(&args.since)
        );
        let body = json_reply(&client.get(&path).await?, "usage")?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            println!("no requests in the last {}", args.since);
            return Ok(());
        }
        let mut total = [0i64; 4];
        let mut cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let n = [
                    num(r, "requests"),
                    num(r, "prompt_tokens"),
                    num(r, "cached_tokens"),
                    num(r, "completion_tokens"),
                ];
                for (t, v) in total.iter_mut().zip(n) {
                    *t += v;
                }
                let key = r["key"].as_str().unwrap_or("(none)").to_string();
                std::iter::once(key)
                    .chain(n.iter().map(i64::to_string))
                    .collect()
            })
            .collect();
        cells.push(
            std::iter::once("TOTAL".to_string())
                .chain(total.iter().map(i64::to_string))
                .collect(),
        );
        let by = args.by.to_uppercase();
        print!(
            "{}",
            table(&[&by, "REQUESTS", "PROMPT", "CACHED", "COMPLETION"], &cells)
        );
        Ok(())
    })
}
