//! Compliance exports of the audit log, end to end: the real server exports over HTTP from real
//! PostgreSQL, and the real `custody-server audit verify` checks the files offline (no database,
//! no data directory), catching every kind of tampering by name.

use std::time::Duration;

use custody_tests::audit::entry_hash;
use custody_tests::export_helpers::*;
use custody_tests::fixtures::*;
use custody_tests::server::{server_bin, tmp_dir};
use custody_tests::{commit_sha, sha256_hex, wait_until, TestEnv};
use serde_json::{json, Value};

fn joined(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.concat()
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("`{}` not found", String::from_utf8_lossy(needle)))
}

/// The PKCS#8 key of a second, unrelated "server" (what an attacker would sign with).
async fn other_signing_key(dir: &std::path::Path) -> Vec<u8> {
    let other = dir.join("other-data");
    std::fs::create_dir_all(&other).unwrap();
    let out = tokio::process::Command::new(server_bin())
        .args(["audit", "public-key", "--data-dir"])
        .arg(&other)
        .env_remove("DATABASE_URL")
        .env_remove("CUSTODY_AUDIT_SIGNING_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    std::fs::read(other.join("audit-signing.pk8")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_entry_log_exports_verifies_and_every_tampering_is_named() {
    let env = TestEnv::start().await;
    let s = &env.server;
    create_project(s, &env.admin, "bulk").await;
    let sql = env.sql().await;
    let have = head_seq(&sql).await;
    create_datasets(s, &env.admin, "bulk", "ds", (10_000 - have) as usize).await;
    assert_eq!(
        head_seq(&sql).await,
        10_000,
        "the log holds exactly 10,000 entries"
    );

    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;
    let jwk = save_public_key(s, dir.path(), "jwk").await;
    assert!(std::fs::read_to_string(&pem)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // The CLI prints the same key the route publishes.
    let cli_key = s.cli(&["audit", "public-key"]).await;
    assert_eq!(
        String::from_utf8_lossy(&cli_key.stdout),
        std::fs::read_to_string(&pem).unwrap()
    );

    let body = export(s, &env.admin, "format=jsonl").await;
    let all = lines(&body);
    assert_eq!(
        all.len(),
        10_001,
        "10,000 entry lines and the manifest line"
    );
    // Every line carries seq, prev_hash, hash and the canonical entry; the chain re-computes
    // with the test's own hashing, and matches the table.
    let mut prev = "0".repeat(64);
    for (i, line) in all[..10_000].iter().enumerate() {
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["seq"], json!(i as i64 + 1));
        assert_eq!(v["entry"]["seq"], v["seq"]);
        assert_eq!(
            v["prev_hash"].as_str(),
            Some(prev.as_str()),
            "seq {}",
            i + 1
        );
        let h = entry_hash(&prev, &v["entry"]);
        assert_eq!(v["hash"].as_str(), Some(h.as_str()), "seq {}", i + 1);
        prev = h;
    }
    let stored: String = sql
        .query_one("SELECT hash FROM audit_log WHERE seq = 10000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prev, stored);
    let claims = manifest_claims(&jsonl_manifest(&body));
    assert_eq!(
        (
            claims["count"].clone(),
            claims["first_seq"].clone(),
            claims["last_seq"].clone()
        ),
        (json!(10_000), json!(1), json!(10_000))
    );
    assert_eq!(claims["head_seq"], json!(10_000));
    assert_eq!(claims["head_hash"].as_str(), Some(stored.as_str()));
    assert_eq!(claims["filtered"], json!(false));
    let body_len = body.len() - all[10_000].len();
    assert_eq!(
        claims["body_sha256"].as_str(),
        Some(sha256_hex_bytes(&body[..body_len]).as_str())
    );
    assert_eq!(claims["body_bytes"], json!(body_len));

    let good = write(dir.path(), "log.jsonl", &body);
    let ok = verify(&good, &pem, &[]).await;
    ok.assert_ok();
    assert!(
        ok.output.contains("10000 entries, seq 1..10000"),
        "{}",
        ok.output
    );
    verify(&good, &jwk, &[]).await.assert_ok();

    // One byte of entry 5,000 flipped (a letter of its action: still valid JSON).
    let i = line_of_seq(&all, 5_000);
    let mut tampered = all.clone();
    let at = find(&tampered[i], b"\"action\":\"") + b"\"action\":\"".len();
    tampered[i][at] ^= 0x01;
    let f = write(dir.path(), "flipped.jsonl", &joined(&tampered));
    verify(&f, &pem, &[])
        .await
        .assert_failed("altered content", Some(5_000));

    // Entry 5,000 removed.
    let mut tampered = all.clone();
    tampered.remove(i);
    let f = write(dir.path(), "removed.jsonl", &joined(&tampered));
    let v = verify(&f, &pem, &[]).await;
    v.assert_failed("missing entry", Some(5_000));
    assert!(
        v.output.contains("seq 4999 is followed by seq 5001"),
        "{}",
        v.output
    );

    // Entries 5,000 and 5,001 swapped.
    let mut tampered = all.clone();
    tampered.swap(i, i + 1);
    let f = write(dir.path(), "swapped.jsonl", &joined(&tampered));
    let v = verify(&f, &pem, &[]).await;
    v.assert_failed("reordered", Some(5_000));
    assert!(v.output.contains("comes after seq 5001"), "{}", v.output);

    // The last 10 entries removed (the manifest kept).
    let mut tampered = all.clone();
    tampered.drain(9_990..10_000);
    let f = write(dir.path(), "truncated.jsonl", &joined(&tampered));
    let v = verify(&f, &pem, &[]).await;
    v.assert_failed("truncated", Some(9_991));
    assert!(
        v.output.contains("10 entries missing at the end"),
        "{}",
        v.output
    );

    // The manifest line cut off too: no manifest.
    let f = write(dir.path(), "cut.jsonl", &joined(&all[..9_990]));
    verify(&f, &pem, &[])
        .await
        .assert_failed("no manifest", None);

    // The manifest re-signed, claims unchanged, with another key.
    let other = other_signing_key(dir.path()).await;
    let mut tampered = all.clone();
    let forged = resign(&jsonl_manifest(&body), &other);
    tampered[10_000] = format!("{{\"manifest\":\"{forged}\"}}\n").into_bytes();
    let f = write(dir.path(), "resigned.jsonl", &joined(&tampered));
    let v = verify(&f, &pem, &[]).await;
    v.assert_failed("bad signature", None);
    assert!(
        v.output.contains("attacker"),
        "the message names the foreign key id: {}",
        v.output
    );

    // CSV of the same range describes the same entries, and verifies.
    let csv = export(s, &env.admin, "format=csv").await;
    let text = String::from_utf8(csv.clone()).unwrap();
    let records = parse_csv(&text);
    assert_eq!(
        records[0].join(","),
        "seq,at,actor,action,project_id,subject_kind,subject_id,before,after,request_id,prev_hash,hash,entry"
    );
    assert_eq!(records.len(), 10_002, "header, 10,000 rows, manifest row");
    let last = records.last().unwrap();
    assert_eq!(last[0], "#manifest");
    let csv_claims = manifest_claims(&last[1]);
    for key in [
        "count",
        "first_seq",
        "last_seq",
        "head_seq",
        "head_hash",
        "window_first_seq",
        "window_last_seq",
    ] {
        assert_eq!(csv_claims[key], claims[key], "manifest {key}");
    }
    assert_eq!(csv_claims["format"], json!("csv"));
    for (row, line) in records[1..10_001].iter().zip(&all[..10_000]) {
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(row[0], v["seq"].to_string());
        assert_eq!(row[10], v["prev_hash"].as_str().unwrap());
        assert_eq!(row[11], v["hash"].as_str().unwrap());
        let entry: Value = serde_json::from_str(&row[12]).unwrap();
        assert_eq!(entry, v["entry"], "seq {}", row[0]);
        assert_eq!(row[1], v["entry"]["at"].as_str().unwrap());
        assert_eq!(row[2], v["entry"]["actor"].as_str().unwrap());
        assert_eq!(row[3], v["entry"]["action"].as_str().unwrap());
        assert_eq!(row[6], v["entry"]["subject_id"].as_str().unwrap());
    }
    let good_csv = write(dir.path(), "log.csv", &csv);
    verify(&good_csv, &pem, &[]).await.assert_ok();
    // A spreadsheet-visible column edited in row 5,000: it no longer agrees with the hashed entry.
    let row_start = text.find("\r\n5000,").unwrap() + 2;
    let row_end = row_start + text[row_start..].find("\r\n").unwrap();
    let edited_row = text[row_start..row_end].replacen("admin@localhost", "admin@localhosu", 1);
    let edited = format!("{}{}{}", &text[..row_start], edited_row, &text[row_end..]);
    let f = write(dir.path(), "edited.csv", edited.as_bytes());
    let v = verify(&f, &pem, &[]).await;
    v.assert_failed("altered content", Some(5_000));
    assert!(v.output.contains("column `actor`"), "{}", v.output);
}

fn sha256_hex_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_auditors_and_project_admins_may_export_nobody_else() {
    let env = TestEnv::start().await;
    let s = &env.server;
    let alpha = id(&create_project(s, &env.admin, "alpha").await);
    create_project(s, &env.admin, "beta").await;
    create_dataset(s, &env.admin, "alpha", "a1").await;
    create_dataset(s, &env.admin, "beta", "b1").await;
    let alice = member_token(s, &env.admin, "alpha", "alice@example.com", "ADMIN").await;
    let victor = member_token(s, &env.admin, "alpha", "victor@example.com", "VIEWER").await;
    let outsider = s.issue_token("olga@example.com", false).await;
    let out = s
        .cli(&[
            "token",
            "issue",
            "--email",
            "audrey@example.com",
            "--auditor",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auditor = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;

    // The auditor exports everything; granting the role was itself audited.
    let body = export(s, &auditor, "").await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("\"action\":\"user.grant_auditor\""),
        "granting the auditor role is audited"
    );
    verify(&write(dir.path(), "all.jsonl", &body), &pem, &[])
        .await
        .assert_ok();

    // A project admin exports their project, filtered, and nothing else.
    let body = export(s, &alice, "project=alpha").await;
    let all = lines(&body);
    assert!(all.len() > 2);
    for line in &all[..all.len() - 1] {
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(
            v["entry"]["project_id"].as_str(),
            Some(alpha.as_str()),
            "{v}"
        );
    }
    let claims = manifest_claims(&jsonl_manifest(&body));
    assert_eq!(claims["filtered"], json!(true));
    assert_eq!(claims["filters"]["project"], json!("alpha"));
    let v = verify(&write(dir.path(), "alpha.jsonl", &body), &pem, &[]).await;
    v.assert_ok();
    assert!(v.output.contains("filtered export"), "{}", v.output);

    assert_eq!(
        refused(s, &alice, "/api/audit/export", 403).await,
        "FORBIDDEN"
    );
    assert_eq!(
        refused(s, &alice, "/api/audit/export?project=beta", 403).await,
        "FORBIDDEN"
    );
    assert_eq!(
        refused(s, &victor, "/api/audit/export?project=alpha", 403).await,
        "FORBIDDEN"
    );
    assert_eq!(
        refused(s, &outsider, "/api/audit/export", 403).await,
        "FORBIDDEN"
    );
    assert_eq!(
        refused(s, "", "/api/audit/export", 401).await,
        "UNAUTHENTICATED"
    );
    // Bad input: a clear error before any export byte, and no checkpoint signed for it.
    let sql = env.sql().await;
    let checkpoints_before: i64 = sql
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refused(s, &env.admin, "/api/audit/export?format=xml", 400).await,
        "INVALID_INPUT"
    );
    assert_eq!(
        refused(s, &env.admin, "/api/audit/export?from=yesterday", 400).await,
        "INVALID_INPUT"
    );
    assert_eq!(
        refused(
            s,
            &env.admin,
            "/api/audit/export?from=2026-02-01&to=2026-01-01",
            400
        )
        .await,
        "INVALID_INPUT"
    );
    assert_eq!(
        refused(s, &env.admin, "/api/audit/export?project=nope", 404).await,
        "NOT_FOUND"
    );
    let checkpoints_after: i64 = sql
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(checkpoints_before, checkpoints_after);

    // The public key needs no token; checkpoints are for auditors and admins.
    let (status, ct, _) = get(s, "", "/api/audit/public-key").await;
    assert_eq!((status, ct.as_str()), (200, "application/jwk+json"));
    assert_eq!(
        refused(s, "", "/api/audit/public-key?format=der", 400).await,
        "INVALID_INPUT"
    );
    let (status, _, cps) = get(s, &auditor, "/api/audit/checkpoints").await;
    assert_eq!(status, 200);
    // Two exports ran above (the auditor's and alice's); each signed one checkpoint. The periodic
    // checkpointer's first tick is an interval after start, so it adds none here.
    assert_eq!(
        String::from_utf8_lossy(&cps).lines().count(),
        2,
        "every export signed a checkpoint"
    );
    assert_eq!(
        refused(s, &alice, "/api/audit/checkpoints", 403).await,
        "FORBIDDEN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_and_time_range_exports_verify_as_what_they_are() {
    let env = TestEnv::start().await;
    let s = &env.server;
    let sql = env.sql().await;
    create_project(s, &env.admin, "p1").await;
    create_project(s, &env.admin, "p2").await;
    create_datasets(s, &env.admin, "p1", "early", 20).await;
    let t0 = time_between_entries(&sql).await;
    create_datasets(s, &env.admin, "p1", "mid", 15).await;
    create_datasets(s, &env.admin, "p2", "mid", 15).await;
    let t1 = time_between_entries(&sql).await;
    create_datasets(s, &env.admin, "p1", "late", 20).await;
    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;

    // A period: exactly the 30 entries made inside it, one contiguous piece of the chain.
    let body = export(s, &env.admin, &format!("from={t0}&to={t1}")).await;
    let all = lines(&body);
    assert_eq!(all.len(), 31, "{}", String::from_utf8_lossy(&body));
    let seqs: Vec<i64> = all[..30]
        .iter()
        .map(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for l in &all[..30] {
        let v: Value = serde_json::from_slice(l).unwrap();
        let at = v["entry"]["at"].as_str().unwrap();
        assert!(
            at >= t0.as_str() && at < t1.as_str(),
            "{at} outside [{t0}, {t1})"
        );
    }
    let period = write(dir.path(), "period.jsonl", &body);
    verify(&period, &pem, &[]).await.assert_ok();
    // Removing the period's first entry is caught even though the chain before it is not in the file.
    let f = write(dir.path(), "period-cut.jsonl", &joined(&all[1..]));
    verify(&f, &pem, &[])
        .await
        .assert_failed("missing entry", Some(seqs[0]));

    // Filtered by project and action: a set of chain links.
    let body = export(
        s,
        &env.admin,
        &format!("project=p1&action=dataset.create&from={t0}"),
    )
    .await;
    let all = lines(&body);
    assert_eq!(
        all.len(),
        36,
        "15 mid and 20 late datasets of p1, and the manifest"
    );
    let f = write(dir.path(), "p1.jsonl", &body);
    verify(&f, &pem, &[]).await.assert_ok();
    let first_seq = serde_json::from_slice::<Value>(&all[0]).unwrap()["seq"]
        .as_i64()
        .unwrap();
    let second_seq = serde_json::from_slice::<Value>(&all[1]).unwrap()["seq"]
        .as_i64()
        .unwrap();
    let mut swapped = all.clone();
    swapped.swap(0, 1);
    let v = verify(
        &write(dir.path(), "p1-swapped.jsonl", &joined(&swapped)),
        &pem,
        &[],
    )
    .await;
    v.assert_failed("reordered", Some(first_seq));
    assert!(
        v.output.contains(&format!("comes after seq {second_seq}")),
        "{}",
        v.output
    );
    let mut flipped = all.clone();
    let at = find(&flipped[3], b"\"subject_kind\":\"") + b"\"subject_kind\":\"".len();
    flipped[3][at] ^= 0x01;
    let seq3 = serde_json::from_slice::<Value>(&all[3]).unwrap()["seq"]
        .as_i64()
        .unwrap();
    verify(
        &write(dir.path(), "p1-flipped.jsonl", &joined(&flipped)),
        &pem,
        &[],
    )
    .await
    .assert_failed("altered content", Some(seq3));
    // An entry of another project slipped into a project export (with its genuine hash) is named.
    let everything = lines(&export(s, &env.admin, &format!("from={t0}")).await);
    let foreign = everything
        .iter()
        .find(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["entry"]["project_id"]
                != serde_json::from_slice::<Value>(&all[0]).unwrap()["entry"]["project_id"]
        })
        .unwrap()
        .clone();
    let foreign_seq = serde_json::from_slice::<Value>(&foreign).unwrap()["seq"]
        .as_i64()
        .unwrap();
    let mut mixed: Vec<Vec<u8>> = all[..all.len() - 1].to_vec();
    let pos = mixed
        .iter()
        .position(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
                > foreign_seq
        })
        .unwrap();
    mixed.insert(pos, foreign);
    mixed.push(all.last().unwrap().clone());
    verify(
        &write(dir.path(), "p1-mixed.jsonl", &joined(&mixed)),
        &pem,
        &[],
    )
    .await
    .assert_failed("outside the export's filter", Some(foreign_seq));

    // An empty period is a valid, empty export.
    let body = export(s, &env.admin, "from=2000-01-01&to=2000-01-02").await;
    assert_eq!(lines(&body).len(), 1);
    let v = verify(&write(dir.path(), "empty.jsonl", &body), &pem, &[]).await;
    v.assert_ok();
    assert!(v.output.contains("0 entries, no entries"), "{}", v.output);
}

/// Now, as RFC 3339 UTC with microseconds (like the entries' `at`), from the database's clock:
/// the server stamps entries with the same machine's clock.
/// A time (RFC 3339, microseconds) strictly after every audit entry written so far and strictly
/// before every entry written after this returns: it polls the database clock until it has passed
/// the last entry, takes that time, and polls again until the clock has moved past it.
async fn time_between_entries(sql: &tokio_postgres::Client) -> String {
    let t = wait_until(
        "the clock to pass the last audit entry",
        Duration::from_secs(5),
        || async {
            let row = sql
                .query_one(
                    "WITH now AS (SELECT clock_timestamp() AS t)
                     SELECT now.t > (SELECT coalesce(max(at), '-infinity') FROM audit_log),
                            to_char(now.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                       FROM now",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, bool>(0).then(|| row.get::<_, String>(1))
        },
    )
    .await;
    wait_until("the clock to move on", Duration::from_secs(5), || async {
        sql.query_one("SELECT clock_timestamp() > $1::text::timestamptz", &[&t])
            .await
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    })
    .await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_expose_a_log_that_lost_its_tail() {
    let env = TestEnv::start().await;
    let s = &env.server;
    create_project(s, &env.admin, "cp").await;
    create_datasets(s, &env.admin, "cp", "x", 30).await;
    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;
    let sql = env.sql().await;
    let head = head_seq(&sql).await;
    let first = export(s, &env.admin, "").await;
    let earlier_manifest = write(
        dir.path(),
        "earlier-manifest.jsonl",
        lines(&first).last().unwrap(),
    );
    let (status, _, cps) = get(s, &env.admin, "/api/audit/checkpoints").await;
    assert_eq!(status, 200);
    let cps = write(dir.path(), "checkpoints.jsonl", &cps);
    let cp: Value = serde_json::from_str(
        std::fs::read_to_string(&cps)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cp["seq"],
        json!(head),
        "the export signed a checkpoint of the head"
    );

    // Someone with database superuser rights removes the newest 5 entries and rewinds the head.
    sql.batch_execute(&format!(
        "ALTER TABLE audit_log DISABLE TRIGGER USER;
         DELETE FROM audit_log WHERE seq > {cut};
         UPDATE audit_head SET seq = {cut}, hash = (SELECT hash FROM audit_log WHERE seq = {cut});
         ALTER TABLE audit_log ENABLE TRIGGER USER;",
        cut = head - 5
    ))
    .await
    .unwrap();
    let after = export(s, &env.admin, "").await;
    let f = write(dir.path(), "after.jsonl", &after);
    // On its own the shortened log is a consistent, signed export…
    verify(&f, &pem, &[]).await.assert_ok();
    // …but it contradicts what the auditor already holds.
    let v = verify(&f, &pem, &["--checkpoints", cps.to_str().unwrap()]).await;
    v.assert_failed("truncated", Some(head - 4));
    assert!(
        v.output
            .contains("entries were removed from the end of the log"),
        "{}",
        v.output
    );
    verify(
        &f,
        &pem,
        &["--checkpoints", earlier_manifest.to_str().unwrap()],
    )
    .await
    .assert_failed("truncated", Some(head - 4));
    // The first export itself agrees with its checkpoints.
    let v = verify(
        &write(dir.path(), "first.jsonl", &first),
        &pem,
        &["--checkpoints", cps.to_str().unwrap()],
    )
    .await;
    v.assert_ok();
    assert!(v.output.contains("checkpoint"), "{}", v.output);
}

const REQUEST_PROMOTION: &str =
    "mutation($v: ID!, $s: String!) { requestPromotion(modelVersionId: $v, stage: $s, comment: \"ready\") { id status } }";
const APPROVE_PROMOTION: &str =
    "mutation($id: ID!) { approvePromotion(id: $id, comment: \"looks right\") { id status } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compliance_report_of_a_promoted_version_lists_lineage_approvals_and_audit() {
    let env = TestEnv::start().await;
    let s = &env.server;
    create_project(s, &env.admin, "risk").await;
    create_dataset(s, &env.admin, "risk", "train").await;
    let digest = sha256_hex("train-v1");
    let dv = id(&register_dataset_version(s, &env.admin, "risk", "train", &digest, &[]).await);
    let sha = commit_sha("c1");
    let commit = id(&register_commit(s, &env.admin, "git@example.com:ml.git", &sha).await);
    let run = id(&start_run(s, &env.admin, "risk", "fit", Some(&commit), &[&dv]).await);
    log_params(s, &env.admin, &run, &[("lr", "0.1"), ("epochs", "7")]).await;
    log_metrics(
        s,
        &env.admin,
        &run,
        json!([{"key": "auc", "value": 0.8, "step": 1}, {"key": "auc", "value": 0.9, "step": 2}]),
    )
    .await;
    finish_run(s, &env.admin, &run, "FINISHED").await;
    create_model(s, &env.admin, "risk", "churn").await;
    let mv = id(&register_model_version(s, &env.admin, "risk", "churn", &run).await);
    // Ada is appointed by another project admin: an approver the requester (the server admin)
    // appointed would not count (separation of duties).
    let lead = member_token(s, &env.admin, "risk", "lead@example.com", "ADMIN").await;
    let approver = member_token(s, &lead, "risk", "ada@example.com", "APPROVER").await;
    let promotion = s
        .gql_ok(
            &env.admin,
            REQUEST_PROMOTION,
            json!({"v": mv, "s": "staging"}),
        )
        .await["requestPromotion"]
        .clone();
    assert_eq!(promotion["status"], json!("PENDING"), "{promotion}");
    let decided = s
        .gql_ok(&approver, APPROVE_PROMOTION, json!({"id": promotion["id"]}))
        .await;
    assert_eq!(
        decided["approvePromotion"]["status"],
        json!("APPLIED"),
        "{decided}"
    );

    let (status, ct, body) = get(s, &env.admin, &format!("/api/compliance/{mv}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let r = &doc["report"];
    let sql = env.sql().await;
    let manifest: String = sql
        .query_one(
            "SELECT manifest_sha256 FROM model_versions WHERE id = $1::text::uuid",
            &[&mv],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        r["model_version"]["manifest_sha256"].as_str(),
        Some(manifest.as_str())
    );
    assert_eq!(r["model_version"]["model"]["name"], json!("churn"));
    assert_eq!(r["model_version"]["stage"], json!("staging"));
    let datasets = r["lineage"]["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 1, "{r}");
    assert_eq!(
        (datasets[0]["id"].as_str(), datasets[0]["sha256"].as_str()),
        (Some(dv.as_str()), Some(digest.as_str()))
    );
    assert_eq!(datasets[0]["tags"], json!(["t"]));
    assert_eq!(
        r["lineage"]["code_commits"][0]["commit"].as_str(),
        Some(sha.as_str())
    );
    let runs = r["lineage"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["params"], json!({"epochs": "7", "lr": "0.1"}));
    assert_eq!(
        runs[0]["metrics"]["auc"]["value"],
        json!(0.9),
        "the last value of each metric"
    );
    let promotions = r["promotions"].as_array().unwrap();
    assert_eq!(promotions.len(), 1, "{r}");
    assert_eq!(promotions[0]["status"], json!("applied"));
    assert!(promotions[0]["policy_digest"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert_eq!(
        promotions[0]["approvals"][0]["approver"],
        json!("ada@example.com")
    );
    assert_eq!(promotions[0]["approvals"][0]["decision"], json!("approve"));
    assert_eq!(
        promotions[0]["approvals"][0]["comment"],
        json!("looks right")
    );
    assert_eq!(r["deployments"][0]["stage"], json!("staging"));
    let entries = r["audit"]["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["entry"]["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"model_version.register") && actions.contains(&"promotion.request"),
        "{actions:?}"
    );
    assert!(
        entries.iter().all(|e| e["chain"] == json!("ok")),
        "{entries:?}"
    );
    assert_eq!(r["audit"]["chain_check"]["ok"], json!(true));

    // The saved report verifies offline; an edited one does not.
    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;
    let saved = write(dir.path(), "report.json", &body);
    verify(&saved, &pem, &[]).await.assert_ok();
    let mut edited = doc.clone();
    edited["report"]["lineage"]["runs"][0]["params"]["lr"] = json!("0.01");
    let f = write(
        dir.path(),
        "report-edited.json",
        edited.to_string().as_bytes(),
    );
    verify(&f, &pem, &[])
        .await
        .assert_failed("altered content", None);

    // The printable page, by parameter or by the browser's Accept header.
    let (status, ct, page) = get(s, &env.admin, &format!("/api/compliance/{mv}?format=html")).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = String::from_utf8(page).unwrap();
    for needle in [
        "churn",
        digest.as_str(),
        sha.as_str(),
        "ada@example.com",
        "lr",
        "0.1",
        "model_version.register",
        manifest.as_str(),
    ] {
        assert!(page.contains(needle), "the page lacks {needle}");
    }
    let resp = s
        .http
        .get(s.url(&format!("/api/compliance/{mv}")))
        .bearer_auth(&env.admin)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    // Who may read it.
    let outsider = s.issue_token("olga@example.com", false).await;
    assert_eq!(
        refused(s, &outsider, &format!("/api/compliance/{mv}"), 403).await,
        "FORBIDDEN"
    );
    let out = s
        .cli(&[
            "token",
            "issue",
            "--email",
            "audrey@example.com",
            "--auditor",
        ])
        .await;
    let auditor = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, _, _) = get(s, &auditor, &format!("/api/compliance/{mv}")).await;
    assert_eq!(status, 200, "auditors read every project's reports");
    let (status, _, _) = get(s, &approver, &format!("/api/compliance/{mv}")).await;
    assert_eq!(status, 200, "project members read their project's reports");
    assert_eq!(
        refused(s, &env.admin, "/api/compliance/not-an-id", 400).await,
        "INVALID_INPUT"
    );
    assert_eq!(
        refused(
            s,
            &env.admin,
            &format!("/api/compliance/{}", custody_tests::random_id()),
            404
        )
        .await,
        "NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_stores_a_verified_copy_and_deletes_nothing() {
    let env = TestEnv::start().await;
    let s = &env.server;
    let sql = env.sql().await;
    create_project(s, &env.admin, "arc").await;
    create_datasets(s, &env.admin, "arc", "old", 40).await;
    let cutoff = time_between_entries(&sql).await;
    create_datasets(s, &env.admin, "arc", "new", 5).await;
    let rows_before: i64 = sql
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    let older: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_log WHERE at < $1::text::timestamptz",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);

    let out = s.cli(&["audit", "archive", "--before", &cutoff]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archived: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(archived["count"], json!(older));
    assert_eq!(archived["first_seq"], json!(1));
    let object = s
        .data_dir
        .join("artifacts")
        .join(archived["object"].as_str().unwrap());
    let bytes = std::fs::read(&object).unwrap_or_else(|e| panic!("{}: {e}", object.display()));
    assert_eq!(
        sha256_hex_bytes(&bytes),
        archived["sha256"].as_str().unwrap()
    );
    let dir = tmp_dir("custody-test-export-");
    let pem = save_public_key(s, dir.path(), "pem").await;
    let v = verify(&object, &pem, &[]).await;
    v.assert_ok();
    assert!(
        v.output
            .contains(&format!("{older} entries, seq 1..{older}")),
        "{}",
        v.output
    );

    // Nothing was deleted: one entry more (the archive's own), the archive recorded.
    let rows_after: i64 = sql
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows_after, rows_before + 1);
    let row = sql
        .query_one("SELECT entry_count, sha256 FROM audit_archives", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (older, archived["sha256"].as_str().unwrap().to_string())
    );
    let action: String = sql
        .query_one(
            "SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(action, "audit.archive");

    let out = s.cli(&["audit", "archive", "--before", "soon"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RFC 3339"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
