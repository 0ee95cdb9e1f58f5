//! fleet-core stays pure: its normal dependencies are only memchr (byte search in the SSE decoder),
//! serde, serde_json and thiserror.

#[test]
fn no_io_runtime_dependencies() {
    let manifest = include_str!("../../Cargo.toml");
    let deps: Vec<&str> = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .flat_map(|section| section.lines().skip(1))
        .filter_map(|line| line.split(['.', '=', ' ']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect();
    assert_eq!(
        deps,
        ["memchr", "serde", "serde_json", "thiserror"],
        "fleet-core must stay IO-free"
    );
}
