//! `booctl`, the boocontrol ops CLI (work in progress).
fn main() {}
