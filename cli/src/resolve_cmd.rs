//! `booctl resolve <model>`: where a model id routes, with secrets masked.

use boo_provider_registry::Resolution;
use serde_json::json;

use crate::Global;
use crate::output::{masked_header, print_warnings};

/// Arguments of `booctl resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The model id a client would send (`provider/model`, a legacy bare id, …).
    pub model: String,
    /// The OpenAI-style path used to show the full target URL.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
}

/// Runs `booctl resolve`.
pub fn run(args: &ResolveArgs, global: &Global) -> anyhow::Result<()> {
    let loaded = global.load_registry()?;
    print_warnings(&loaded.warnings);
    let r = loaded
        .registry
        .resolve(&args.model, None)
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot resolve {:?}", args.model)))?;
    if global.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&r, &args.path))?
        );
    } else {
        print!("{}", to_text(&r, &args.path));
    }
    Ok(())
}

fn to_text(r: &Resolution, path: &str) -> String {
    let headers: Vec<String> = r.target.headers.iter().map(masked_header).collect();
    format!(
        "provider:   {}\nmodel:      {}\nwire model: {}\nkind:       {}\nlane:       {}\nbase url:   {}{}\ntarget:     {}\nheaders:    {}\n",
        r.provider,
        r.model,
        r.wire_model,
        r.kind,
        r.lane,
        r.target.base_url,
        if r.target.via_sidecar {
            " (sidecar)"
        } else {
            ""
        },
        r.target.url_for(path),
        if headers.is_empty() {
            "-".to_owned()
        } else {
            headers.join(", ")
        },
    )
}

fn to_json(r: &Resolution, path: &str) -> serde_json::Value {
    json!({
        "provider": r.provider,
        "model": r.model,
        "wire_model": r.wire_model,
        "kind": r.kind,
        "lane": r.lane,
        "base_url": r.target.base_url,
        "via_sidecar": r.target.via_sidecar,
        "target_url": r.target.url_for(path),
        "headers": r.target.headers.iter().map(masked_header).collect::<Vec<_>>(),
    })
}
