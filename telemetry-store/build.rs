//! Rebuilds the crate when a migration file changes: `sqlx::migrate!` embeds them at compile
//! time, and cargo does not watch that directory on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
