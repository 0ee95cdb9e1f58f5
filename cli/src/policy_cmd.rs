//! `booctl policy list|show|set|delete`: the `auto:*` routing policies of a running gateway
//! (`/api/routing/policies`).
//!
//! Policies set here are kept in the gateway's telemetry store (they survive a restart; with
//! `--no-telemetry` they live in memory only). A policy set with the name of a config-file
//! policy overrides it; deleting that override restores the config version; a config policy
//! itself cannot be deleted here (edit the config file). `set` and `delete` need the
//! gateway's admin token (`--admin-token` or `BOOCONTROL_ADMIN_TOKEN`) when it has one.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::Global;
use crate::activity_cmd::json_reply;
use crate::fleet_cmd::ControlArgs;
use crate::http::{Client, Reply};

/// `booctl policy …`.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// List the policies (name, origin, candidates, order).
    List {
        #[command(flatten)]
        auth: ControlArgs,
    },
    /// Print one policy as JSON.
    Show {
        /// Policy name (`auto`, `auto:code`, …).
        name: String,
        #[command(flatten)]
        auth: ControlArgs,
    },
    /// Add or replace a policy from a JSON file (`-` reads stdin) or inline JSON.
    Set {
        /// Policy name (`auto`, `auto:code`, …).
        name: String,
        /// File holding the policy object.
        #[arg(long, value_name = "PATH", conflicts_with = "inline")]
        file: Option<std::path::PathBuf>,
        /// The policy object as inline JSON.
        #[arg(long = "policy", value_name = "JSON")]
        inline: Option<String>,
        #[command(flatten)]
        auth: ControlArgs,
    },
    /// Delete an API-set policy (an override of a config policy: the config one applies again).
    Delete {
        /// Policy name.
        name: String,
        #[command(flatten)]
        auth: ControlArgs,
    },
}

impl PolicyCmd {
    fn token(&self) -> Option<String> {
        match self {
            PolicyCmd::List { auth }
            | PolicyCmd::Show { auth, .. }
            | PolicyCmd::Set { auth, .. }
            | PolicyCmd::Delete { auth, .. } => auth.admin_token.clone().filter(|t| !t.is_empty()),
        }
    }
}

/// Like `json_reply`, with a hint on 401/403 (the admin token) and 409 (config policies).
fn change_reply(reply: &Reply, what: &str, had_token: bool) -> anyhow::Result<Value> {
    json_reply(reply, what).map_err(|e| match reply.status {
        401 | 403 if !had_token => e.context(
            "this gateway requires its admin token: pass --admin-token or set BOOCONTROL_ADMIN_TOKEN",
        ),
        401 | 403 => e.context("the admin token was not accepted"),
        409 => e.context("config-file policies are changed in the config file"),
        _ => e,
    })
}

/// Sends `method path` with an optional JSON body (PUT/DELETE: the shared client only
/// speaks GET/POST). Plain `http://` gateways only.
pub(crate) async fn send(
    gateway: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Bytes>,
    token: Option<&str>,
) -> anyhow::Result<Reply> {
    let base = gateway.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!("--gateway: {gateway:?}: policy set/delete need an http:// gateway URL");
    }
    let uri: hyper::Uri = format!("{base}{path}")
        .parse()
        .with_context(|| format!("--gateway: {gateway:?} is not a URL"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some(t) = token {
        let mut v = hyper::header::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
            anyhow::anyhow!("--admin-token: contains characters not allowed in an HTTP header")
        })?;
        v.set_sensitive(true);
        req = req.header(hyper::header::AUTHORIZATION, v);
    }
    let req = req.body(Full::new(body.unwrap_or_default()))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply { status, body })
}

fn path_for(name: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b":_-".contains(&c))
    {
        bail!("policy name {name:?}: expected `auto` or `auto:<name>` ([a-z0-9_-])");
    }
    Ok(format!("/api/routing/policies/{name}"))
}

fn list_str(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into())
}

/// Runs `booctl policy …`.
pub fn run(cmd: &PolicyCmd, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let token = cmd.token();
        let client = Client::new(&global.gateway, token.clone())?;
        match cmd {
            PolicyCmd::List { .. } => {
                let v = json_reply(&client.get("/api/routing/policies").await?, "policies")?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let ps = v["policies"].as_array().cloned().unwrap_or_default();
                if ps.is_empty() {
                    println!("no routing policies");
                }
                println!("{:<16} {:<7} {:<30} CANDIDATES", "NAME", "ORIGIN", "ORDER");
                for p in ps {
                    let order = match p.get("order") {
                        Some(o) => list_str(o),
                        None => "prefer_loaded".into(),
                    };
                    println!(
                        "{:<16} {:<7} {:<30} {}",
                        p["name"].as_str().unwrap_or("?"),
                        p["origin"].as_str().unwrap_or("-"),
                        order,
                        list_str(&p["candidates"])
                    );
                }
            }
            PolicyCmd::Show { name, .. } => {
                let v = json_reply(&client.get(&path_for(name)?).await?, "policy")?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            PolicyCmd::Set {
                name, file, inline, ..
            } => {
                let text = match (file, inline) {
                    (Some(p), _) if p.as_os_str() == "-" => {
                        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
                    }
                    (Some(p), _) => std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    (None, Some(j)) => j.clone(),
                    (None, None) => bail!("policy set: give --file PATH or --policy JSON"),
                };
                let v: Value = serde_json::from_str(&text).context("policy: not valid JSON")?;
                let reply = send(
                    &global.gateway,
                    hyper::Method::PUT,
                    &path_for(name)?,
                    Some(Bytes::from(serde_json::to_vec(&v)?)),
                    token.as_deref(),
                )
                .await?;
                let v = change_reply(&reply, "policy set", token.is_some())?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let n = v["name"].as_str().unwrap_or(name);
                    let mut notes = Vec::new();
                    if v["overrides_config"] == true {
                        notes.push("overrides the config-file policy");
                    }
                    if v["persisted"] == false {
                        notes.push("in memory only: the gateway has no store");
                    }
                    if notes.is_empty() {
                        println!("set {n}");
                    } else {
                        println!("set {n} ({})", notes.join("; "));
                    }
                }
            }
            PolicyCmd::Delete { name, .. } => {
                let reply = send(
                    &global.gateway,
                    hyper::Method::DELETE,
                    &path_for(name)?,
                    None,
                    token.as_deref(),
                )
                .await?;
                let v = change_reply(&reply, "policy delete", token.is_some())?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if v["restored"] == "config" {
                    println!("deleted {name} (the config-file policy applies again)");
                } else {
                    println!("deleted {name}");
                }
            }
        }
        Ok(())
    })
}
