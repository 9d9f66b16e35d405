//! `sqlx::migrate!` embeds `migrations/` at build time; without this a new migration file
//! would not rebuild the store crate and tests would run against the old schema.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
