//! One executor per host: runs queued warm / unload actions in order. Results reach clients as
//! model-state deltas on the fleet stream (the host's own events), and as a log line.

use super::client::HostClient;
use super::{HostKind, Shared, now_ms};
use boo_fleet_core::Action;
use boo_fleet_core::wire::LogSource;
use bytes::Bytes;
use std::sync::{PoisonError, Weak};
use std::time::Duration;

/// Loading a big model can take minutes; unloading is quick.
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) async fn run_executor(shared: Weak<Shared>, provider: String) {
    let client = HostClient::new(ACTION_TIMEOUT);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let Some(ha) = s.actions.get(&provider).cloned() else {
            return;
        };
        while let Some(host) = s.hub.host(&provider) {
            let d = ha
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next(&host, now_ms());
            for (a, why) in &d.skipped {
                let line = format!("[boocontrol] skipped {} ({why:?})\n", a.action);
                s.hub.push_log(&provider, LogSource::Proxy, &line);
            }
            let Some(run) = d.run else { break };
            let outcome = execute(&s, &client, &provider, &run.action).await;
            let line = format!("[boocontrol] {}: {outcome}\n", run.action);
            s.hub.push_log(&provider, LogSource::Proxy, &line);
            ha.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finish(run.id);
        }
        drop(s);
        ha.wake.notified().await;
    }
}

async fn execute(s: &Shared, client: &HostClient, provider: &str, action: &Action) -> String {
    let Some(h) = s.hosts.get(provider) else {
        return "unknown host".into();
    };
    let (path, body) = match (action, h.kind) {
        (Action::Warm { model }, _) => (
            "/v1/chat/completions".to_owned(),
            Some(Bytes::from(
                serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 1,
                    "stream": false,
                })
                .to_string(),
            )),
        ),
        (Action::Unload { .. } | Action::UnloadAll, HostKind::LlamaServer) => {
            return "not supported by llama-server".into();
        }
        (Action::Unload { model }, HostKind::LlamaSwap) => {
            (format!("/api/models/unload/{}", encode_path(model)), None)
        }
        (Action::UnloadAll, HostKind::LlamaSwap) => ("/api/models/unload".to_owned(), None),
    };
    let url = format!("{}{}", h.base_url, path);
    match client
        .call(hyper::Method::POST, &url, &h.headers, body)
        .await
    {
        Ok(a) if (200..300).contains(&a.status) => format!("ok ({})", a.status),
        Ok(a) => format!("failed: host answered {}", a.status),
        Err(e) => format!("failed: {e}"),
    }
}

/// Percent-encodes a model id for a path, keeping `/` (llama-swap matches `{model...}`).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
