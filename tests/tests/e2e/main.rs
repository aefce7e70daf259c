//! The end-to-end tests: one test binary, one module per subject. They share the harness
//! (`custody_tests`): one private PostgreSQL cluster and one migrated template for the whole
//! process, a fresh database cloned from it and a real `custody-server` per test.
//!
//! ```text
//! cargo test -p custody-tests                        # every end-to-end test
//! cargo test -p custody-tests --test e2e governance  # the tests whose path contains `governance`
//! ```
//!
//! The `bench_*` modules are load benchmarks, `#[ignore]`d:
//! `cargo test -p custody-tests --release --test e2e bench_… -- --ignored --nocapture`.
//!
//! A new test file is a module here (`mod name;` below, the file `tests/tests/e2e/name.rs`);
//! [`every_test_file_is_a_module_of_this_binary`] fails for a file anywhere else.

mod access_tokens;
mod api_happy_path;
mod approval_page_browser;
mod artifacts;
mod attack_authorization;
mod attack_outbound_and_files;
mod attack_resource_limits;
mod attack_separation_of_duties;
mod audit;
mod audit_export;
mod auth;
mod bench_artifacts;
mod bench_audit_export;
mod bench_concurrent_writers;
mod bench_lineage;
mod bench_mlflow;
mod bench_model_version_reads;
mod bench_search_runs;
mod cli;
mod cli_login;
mod compare_runs;
mod config_errors;
mod governance;
mod harness;
mod invitations;
mod labels;
mod lifecycle;
mod lineage;
mod metric_history;
mod migrations;
mod openlineage_batches;
mod recalls;
mod refusals;
mod search_plans;
mod search_runs;
mod sign_in_email;
mod sign_in_oidc;
mod web_ui;
mod web_ui_admin;
mod web_ui_models;

/// Every test source is a module of this binary: `tests/tests/` holds only `e2e/`, and every
/// `e2e/*.rs` is declared in this file (a file that is not would silently never run).
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let strays: Vec<String> = std::fs::read_dir(&tests)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "e2e")
        .collect();
    assert!(
        strays.is_empty(),
        "{strays:?} in {}: move each test file to tests/tests/e2e/ and declare it in e2e/main.rs \
         (one test binary shares one PostgreSQL cluster and links once)",
        tests.display()
    );
    let main = std::fs::read_to_string(tests.join("e2e/main.rs")).unwrap();
    let undeclared: Vec<String> = std::fs::read_dir(tests.join("e2e"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let module = name.strip_suffix(".rs")?.to_string();
            (module != "main" && !main.contains(&format!("\nmod {module};"))).then_some(name)
        })
        .collect();
    assert!(
        undeclared.is_empty(),
        "{undeclared:?} in tests/tests/e2e/ are not declared in main.rs (`mod name;`): they never run"
    );
}
mod bench_ui_pages;
mod web_ui_runs;
