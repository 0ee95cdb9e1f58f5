//! `booctl config ...`: check a config file, print the example, print the JSON Schema.

use anyhow::Context;
use boo_provider_registry::{ConfigError, Provider};
use clap::Subcommand;
use serde_json::json;

use crate::Global;
use crate::output::{print_warnings, table};

/// The shipped example configuration.
pub const EXAMPLE: &str = include_str!("../../examples/boocontrol.example.json");

/// `booctl config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the config and print its providers, or every problem found (exit 2).
    Check,
    /// Print an example config file (sam-desktop, embedding with a sidecar, deepseek).
    Example,
    /// Print the JSON Schema of the config file (point "$schema" or your editor at it).
    Schema,
}

/// Runs a `config` subcommand.
pub fn run(cmd: &ConfigCmd, global: &Global) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Check => check(global),
        ConfigCmd::Example => {
            print!("{EXAMPLE}");
            Ok(())
        }
        ConfigCmd::Schema => {
            let s = serde_json::to_string_pretty(&boo_provider_registry::json_schema())?;
            println!("{s}");
            Ok(())
        }
    }
}

fn check(global: &Global) -> anyhow::Result<()> {
    let loaded = match global.load_registry() {
        Ok(l) => l,
        Err(e) => {
            if global.json {
                let problems: Vec<_> = e
                    .problems()
                    .iter()
                    .map(|p| json!({ "path": p.path, "message": p.message }))
                    .collect();
                println!(
                    "{}",
                    json!({ "valid": false, "error": e.to_string(), "problems": problems })
                );
            }
            return Err(match e {
                // The error itself lists every problem with its path.
                ConfigError::Invalid { .. } => anyhow::Error::new(e),
                other => anyhow::Error::new(other).context("cannot load the configuration"),
            });
        }
    };
    print_warnings(&loaded.warnings);
    let reg = &loaded.registry;
    if global.json {
        let providers: Vec<_> = reg.providers().iter().map(provider_json).collect();
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        let out = json!({
            "valid": true,
            "origin": loaded.origin,
            "default_provider": reg.default_provider().id,
            "providers": providers,
            "warnings": warnings,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("encoding JSON")?
        );
        return Ok(());
    }
    println!("config: {} (valid)", loaded.origin);
    let rows: Vec<Vec<String>> = reg.providers().iter().map(provider_row).collect();
    print!(
        "{}",
        table(
            &[
                "ID", "KIND", "LANE", "DEFAULT", "ENABLED", "AUTH", "BASE URL", "SIDECAR"
            ],
            &rows
        )
    );
    Ok(())
}

fn auth(p: &Provider) -> String {
    match (&p.api_key, p.headers.len()) {
        (Some(_), 0) => "key ***".to_owned(),
        (Some(_), n) => format!("key *** +{n} hdr"),
        (None, 0) => "-".to_owned(),
        (None, n) => format!("{n} hdr"),
    }
}

fn provider_row(p: &Provider) -> Vec<String> {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    vec![
        p.id.to_string(),
        p.kind.to_string(),
        p.lane.to_string(),
        yes(p.is_default),
        yes(p.enabled),
        auth(p),
        p.base_url.clone(),
        p.sidecar.as_ref().map_or_else(
            || "-".to_owned(),
            |s| format!("{} ({})", s.url, s.models.join(", ")),
        ),
    ]
}

fn provider_json(p: &Provider) -> serde_json::Value {
    json!({
        "id": p.id,
        "label": p.label,
        "kind": p.kind,
        "lane": p.lane,
        "base_url": p.base_url,
        "enabled": p.enabled,
        "default": p.is_default,
        "api_key": p.api_key.as_ref().map(|_| "***"),
        "headers": p.headers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "sidecar": p.sidecar.as_ref().map(|s| json!({ "url": s.url, "models": s.models })),
        "models": p.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        "max_concurrency": p.max_concurrency,
        "timeouts_ms": {
            "connect": p.timeouts.connect.as_millis() as u64,
            "first_byte": p.timeouts.first_byte.as_millis() as u64,
            "idle": p.timeouts.idle.as_millis() as u64,
            "total": p.timeouts.total.map(|d| d.as_millis() as u64),
        },
        "os": p.os,
        "gpu_label": p.gpu_label,
    })
}
