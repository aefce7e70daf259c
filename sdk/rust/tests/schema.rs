//! `sdk/schema.graphql` is what `custody-server schema` prints, byte for byte: the SDK's typed
//! operations are checked against that file at compile time, so a stale copy would let the SDK
//! drift from the server unnoticed.

use std::path::Path;

const REGENERATE: &str = "cargo run -q -p custody-server -- schema > sdk/schema.graphql";

#[test]
fn checked_in_schema_matches_the_server() {
    let bin = custody_tests::server::server_bin();
    let out = std::process::Command::new(&bin)
        .arg("schema")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("running {} schema: {e}", bin.display()));
    assert!(
        out.status.success(),
        "`custody-server schema` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("the SDL is UTF-8");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let checked_in = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    if printed == checked_in {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (checked_in.lines().collect(), printed.lines().collect());
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let show = |lines: &[&str]| -> String {
        lines[first.saturating_sub(2)..(first + 4).min(lines.len())]
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:5} | {l}\n", first.saturating_sub(2) + i + 1))
            .collect()
    };
    panic!(
        "sdk/schema.graphql is out of date with `custody-server schema` (first difference at line {}; \
         the file has {} lines, the server prints {}).\n\
         --- sdk/schema.graphql ---\n{}--- custody-server schema ---\n{}\
         Regenerate it from the repository root with:\n    {REGENERATE}\n\
         then rebuild the SDK (`cargo build -p custody`): its queries are checked against the new schema.",
        first + 1,
        a.len(),
        b.len(),
        show(&a),
        show(&b),
    );
}
