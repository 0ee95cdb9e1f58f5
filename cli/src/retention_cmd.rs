//! `booctl retention run [--dry-run] [--store URL]`: plans (and unless `--dry-run`, runs)
//! retention directly against the store, holding the retention lock, and prints the plan and
//! what was done. Windows come from `RETENTION_*` / `CAPTURE_BUDGET_MB`.

use anyhow::Context as _;

use crate::Global;

/// `booctl retention …`.
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCmd {
    /// Roll up and prune old rows now.
    Run {
        /// Print what would be done without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Store URL (else $BOOCONTROL_STORE, else sqlite://boocontrol.db).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
}

/// Runs `booctl retention …`.
pub fn run(cmd: &RetentionCmd, global: &Global) -> anyhow::Result<()> {
    let RetentionCmd::Run { dry_run, store } = cmd;
    let env = |k: &str| std::env::var(k).ok();
    let policy = boo_telemetry_store::RetentionPolicy::from_env(&env)?;
    let url = boo_telemetry_store::store_url(store.as_deref(), &env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let scheme = url.split(':').next().unwrap_or_default().to_string();
        let store = boo_telemetry_store::open(&url)
            .await
            .with_context(|| format!("opening the {scheme} store"))?;
        let out =
            boo_telemetry_store::run_retention(&*store, &policy, chrono::Utc::now(), *dry_run)
                .await;
        store.close().await;
        let out = out.context("retention")?;
        if global.json {
            let kind = match &out {
                boo_telemetry_store::RetentionOutcome::DryRun(_) => "dry_run",
                boo_telemetry_store::RetentionOutcome::Ran { .. } => "ran",
                boo_telemetry_store::RetentionOutcome::Locked => "locked",
            };
            println!(
                "{}",
                serde_json::json!({ "outcome": kind, "text": out.to_string() })
            );
        } else {
            println!("{out}");
        }
        Ok(())
    })
}
