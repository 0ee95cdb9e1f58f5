//! `booctl route explain <model> [--prompt-tokens N] [--max-tokens M]`: the decision a running
//! gateway would make for an `auto:*` model right now (`POST /api/routing/explain`), without
//! sending any request to a model.

use anyhow::Context as _;

use crate::Global;
use crate::activity_cmd::json_reply;
use crate::http::Client;

/// `booctl route …`.
#[derive(Debug, clap::Subcommand)]
pub enum RouteCmd {
    /// Print the ordered attempts and why every other candidate was skipped.
    Explain {
        /// Virtual model (`auto`, `auto:code`, …).
        model: String,
        /// Estimated prompt size in tokens.
        #[arg(long, value_name = "N")]
        prompt_tokens: Option<u32>,
        /// `max_tokens` of the request.
        #[arg(long, value_name = "N")]
        max_tokens: Option<u32>,
        #[command(flatten)]
        auth: crate::fleet_cmd::ControlArgs,
    },
}

/// Runs `booctl route …`.
pub fn run(cmd: &RouteCmd, global: &Global) -> anyhow::Result<()> {
    let RouteCmd::Explain {
        model,
        prompt_tokens,
        max_tokens,
        auth,
    } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::new(&global.gateway, auth.admin_token.clone())?;
        let mut body = serde_json::json!({ "model": model });
        if let Some(n) = prompt_tokens {
            body["prompt_tokens"] = (*n).into();
        }
        if let Some(n) = max_tokens {
            body["max_tokens"] = (*n).into();
        }
        let reply = client.post_json("/api/routing/explain", &body).await?;
        let v = json_reply(&reply, "route explain")?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&v["decision"])?);
        } else {
            println!("{}", v["text"].as_str().unwrap_or_default());
        }
        Ok(())
    })
}
