//! Runs every case in `routing/testdata/*.json`: a fleet snapshot, a policy, a request and
//! the expected attempts and skip codes. Add a file to add a case.

use boo_routing::{CandidateFacts, FleetView, RequestFeatures, RoutePolicy, decide};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    policy: serde_json::Value,
    #[serde(default)]
    request: RequestFeatures,
    fleet: Vec<CandidateFacts>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    attempts: Vec<String>,
    #[serde(default)]
    skipped: BTreeMap<String, String>,
}

#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus missing in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let case: Case =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let policy =
            RoutePolicy::from_json(&case.policy).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let d = decide(&policy, &case.request, &FleetView::new(case.fleet));
        let got_attempts: Vec<String> = d.attempts.iter().map(|a| a.model.to_string()).collect();
        let got_skipped: BTreeMap<String, String> = d
            .skipped
            .iter()
            .map(|(m, r)| (m.to_string(), boo_routing::decide::skip_code(r).to_owned()))
            .collect();
        if got_attempts != case.expect.attempts || got_skipped != case.expect.skipped {
            failures.push(format!(
                "{} ({}):\n  want attempts {:?} skipped {:?}\n  got:\n{d}",
                f.display(),
                case.description,
                case.expect.attempts,
                case.expect.skipped
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
