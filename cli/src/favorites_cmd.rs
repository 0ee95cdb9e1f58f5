//! `booctl favorites list|add|remove`: the favorites kept in the gateway's store (through
//! `GET`/`POST /api/favorites`, so one process owns the store). Favorites of models that are
//! currently unavailable are kept; only `remove` deletes one.

use anyhow::Context as _;

use crate::Global;
use crate::activity_cmd::json_reply;
use crate::http::Client;

/// `booctl favorites …`.
#[derive(Debug, clap::Subcommand)]
pub enum FavoritesCmd {
    /// Print the favorites, one per line.
    List,
    /// Add favorites (`provider/model`; a bare id gets the default provider).
    Add {
        /// Model ids.
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Remove favorites.
    Remove {
        /// Model ids.
        #[arg(required = true)]
        models: Vec<String>,
    },
}

/// Runs `booctl favorites …`.
pub fn run(cmd: &FavoritesCmd, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::new(&global.gateway, None)?;
        let reply = match cmd {
            FavoritesCmd::List => client.get("/api/favorites").await?,
            FavoritesCmd::Add { models } => {
                client
                    .post_json("/api/favorites", &serde_json::json!({ "add": models }))
                    .await?
            }
            FavoritesCmd::Remove { models } => {
                client
                    .post_json("/api/favorites", &serde_json::json!({ "remove": models }))
                    .await?
            }
        };
        let body = json_reply(&reply, "favorites")?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        let favs = body["favorites"].as_array().cloned().unwrap_or_default();
        if favs.is_empty() {
            println!("no favorites");
        }
        for f in favs {
            println!("{}", f.as_str().unwrap_or_default());
        }
        Ok(())
    })
}
