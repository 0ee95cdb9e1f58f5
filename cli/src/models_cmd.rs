//! `booctl models [--scores]`: the models a running gateway serves (`GET /v1/models`, routing
//! policies included), or with `--scores` the advisory score of every composite model
//! (`GET /api/routing/scores`).

use anyhow::Context as _;

use crate::Global;
use crate::activity_cmd::json_reply;
use crate::http::Client;

/// `booctl models` arguments.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Show advisory scores (health, speed) per composite model, best first.
    #[arg(long)]
    pub scores: bool,
    #[command(flatten)]
    pub auth: crate::fleet_cmd::ControlArgs,
}

fn num(v: &serde_json::Value, k: &str) -> String {
    v.get(k)
        .and_then(serde_json::Value::as_f64)
        .map(|x| format!("{x:.2}"))
        .unwrap_or_else(|| "-".into())
}

/// Runs `booctl models`.
pub fn run(args: &ModelsArgs, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::new(&global.gateway, args.auth.admin_token.clone())?;
        if args.scores {
            let v = json_reply(&client.get("/api/routing/scores").await?, "scores")?;
            if global.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<48} {:>7} {:>7} {:>7}",
                "MODEL", "SCORE", "HEALTH", "SPEED"
            );
            for r in v["scores"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<48} {:>7} {:>7} {:>7}",
                    r["model"].as_str().unwrap_or("?"),
                    num(&r, "score"),
                    num(&r, "health"),
                    num(&r, "speed")
                );
            }
            return Ok(());
        }
        let v = json_reply(&client.get("/v1/models").await?, "models")?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        for m in v["data"].as_array().cloned().unwrap_or_default() {
            println!("{}", m["id"].as_str().unwrap_or("?"));
        }
        Ok(())
    })
}
