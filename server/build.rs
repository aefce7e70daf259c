//! `embed_migrations!` reads `migrations/` at compile time, but cargo only watches the files the
//! macro includes: a migration added without any other change would be left out of the binary.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
