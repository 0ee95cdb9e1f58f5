//! `booctl activity`: the gateway's activity feed (`GET /api/activity`), newest first, or a
//! live tail with `--follow` (polls about once a second and prints each new row once).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::Global;
use crate::http::{Client, Reply, error_message};
use crate::output::table;

/// Options of `booctl activity`.
#[derive(Debug, clap::Args)]
pub struct ActivityArgs {
    /// Only requests with this `X-Boo-Source`.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this model (as stored: composite id for gateway rows).
    #[arg(long)]
    pub model: Option<String>,
    /// Only this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this HTTP status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only rows observed by the gateway (`gateway`) or reconciled from hosts (`host`).
    #[arg(long, value_parser = ["gateway", "host"])]
    pub origin: Option<String>,
    /// Rows to show (1-1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep polling and print new rows as they arrive (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// Percent-encodes a query value (unreserved characters pass through).
pub(crate) fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(args: &ActivityArgs, limit: u32) -> String {
    let mut q = vec![format!("limit={limit}")];
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    };
    add("source", &args.source);
    add("model", &args.model);
    add("provider", &args.provider);
    add("origin", &args.origin);
    add("status", &args.status.map(|s| s.to_string()));
    format!("/api/activity?{}", q.join("&"))
}

/// Parses a JSON reply, turning non-2xx answers into one-line errors.
pub(crate) fn json_reply(reply: &Reply, what: &str) -> anyhow::Result<Value> {
    if !(200..300).contains(&reply.status) {
        bail!(
            "{what}: gateway answered {}: {}",
            reply.status,
            error_message(&reply.body)
        );
    }
    serde_json::from_slice(&reply.body).with_context(|| format!("{what}: reply is not JSON"))
}

fn cell(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn time_cell(v: &Value) -> String {
    let ts = cell(v, "ts");
    // 2026-11-21T05:48:34.123456Z -> 2026-11-21 05:48:34
    ts.get(..19).map(|s| s.replace('T', " ")).unwrap_or(ts)
}

fn rows_table(items: &[&Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                time_cell(r),
                cell(r, "origin"),
                cell(r, "provider_id"),
                cell(r, "model"),
                cell(r, "source"),
                cell(r, "status"),
                cell(r, "duration_ms"),
                cell(r, "prompt_tokens"),
                cell(r, "completion_tokens"),
                cell(r, "gen_tps"),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "ORIGIN", "PROVIDER", "MODEL", "SOURCE", "STATUS", "MS", "PROMPT", "COMPL",
            "TOK/S",
        ],
        &rows,
    )
}

fn key(r: &Value) -> String {
    format!("{}\u{1}{}", cell(r, "origin"), cell(r, "id"))
}

/// Runs `booctl activity`.
pub fn run(args: &ActivityArgs, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::new(&global.gateway, None)?;
        let page = fetch(&client, &query(args, args.limit)).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if !args.follow {
            if global.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else if items.is_empty() {
                println!("no activity");
            } else {
                print!("{}", rows_table(&items.iter().collect::<Vec<_>>()));
            }
            return Ok(());
        }
        follow(&client, args, global, items).await
    })
}

async fn fetch(client: &Client, path: &str) -> anyhow::Result<Value> {
    let reply = client.get(path).await?;
    json_reply(&reply, "activity")
}

/// Prints `first` oldest-first, then polls the newest page and prints unseen rows.
async fn follow(
    client: &Client,
    args: &ActivityArgs,
    global: &Global,
    first: Vec<Value>,
) -> anyhow::Result<()> {
    // Remember recent keys only: the newest page is bounded, so is the set.
    let mut seen: HashSet<String> = first.iter().map(key).collect();
    let print = |rows: &[&Value], header: bool| {
        if global.json {
            for r in rows {
                println!("{r}");
            }
        } else if !rows.is_empty() {
            let t = rows_table(rows);
            let mut lines = t.lines();
            if !header {
                lines.next();
            }
            for l in lines {
                println!("{l}");
            }
        }
    };
    let oldest_first: Vec<&Value> = first.iter().rev().collect();
    print(&oldest_first, true);
    let mut header_printed = !oldest_first.is_empty();
    let path = query(args, 200);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let page = match fetch(client, &path).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("warning: {e:#} (retrying)");
                continue;
            }
        };
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let fresh: Vec<&Value> = items
            .iter()
            .rev()
            .filter(|r| !seen.contains(&key(r)))
            .collect();
        print(&fresh, !header_printed);
        header_printed |= !fresh.is_empty();
        seen = items.iter().map(key).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_filters() {
        let args = ActivityArgs {
            source: Some("my app".into()),
            model: Some("sam/qwen".into()),
            provider: None,
            status: Some(500),
            origin: None,
            limit: 5,
            follow: false,
        };
        assert_eq!(
            query(&args, 5),
            "/api/activity?limit=5&source=my%20app&model=sam%2Fqwen&status=500"
        );
    }
}
