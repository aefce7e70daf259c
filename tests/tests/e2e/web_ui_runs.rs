//! The runs table, compare view and metric charts in real headless Chromium: columns chosen from
//! the project's keys (`Project.runKeys`), sorted by any column, the filter box completing keys;
//! ticking runs to compare them (params diff, metrics, overlaid charts drawn by uPlot from
//! `metricHistory`); a running run's charts growing live from the subscription with the page's
//! session, which needs the page's CSRF value; the pages at phone width. Screenshots go to
//! `target/ui-screenshots/`.

use std::time::Duration;

use custody_tests::browser::{rows, screenshot, text_of, wait_for_url, Browser};
use custody_tests::fixtures::*;
use custody_tests::governance::start_env_with_smtp;
use custody_tests::sign_in::sign_in_in_browser;
use custody_tests::wait_until;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const ANA: &str = "ana@example.com";

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Waits until `script` answers something other than null or false.
async fn until_js(c: &Client, what: &str, script: &str) -> Value {
    wait_until(what, Duration::from_secs(20), || async {
        Some(js(c, script).await).filter(|v| !v.is_null() && *v != json!(false))
    })
    .await
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The runs table's header once it satisfies `ready` (after a click, the next page may still be
/// on its way).
async fn header_when(c: &Client, ready: impl Fn(&str) -> bool) -> String {
    let script = "const h = document.querySelector('#runs thead'); return h ? h.textContent : null";
    wait_until(
        "the runs table's header",
        Duration::from_secs(20),
        || async {
            let head = c.execute(script, vec![]).await.ok()?;
            head.as_str().filter(|h| ready(h)).map(str::to_owned)
        },
    )
    .await
}

/// The first word of each row of the runs table once there are `n` rows in this order.
async fn run_names_when(c: &Client, expected: &[&str]) {
    let script = "return Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[1].textContent)";
    let want = json!(expected);
    wait_until(
        &format!("runs in the order {expected:?}"),
        Duration::from_secs(20),
        || async {
            let names = c.execute(script, vec![]).await.ok()?;
            (names == want).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_chooses_columns_sorts_completes_keys_and_compares_runs() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    let mut ids = Vec::new();
    for (name, auc, lr) in [
        ("baseline", 0.71, "0.1"),
        ("tuned", 0.83, "0.05"),
        ("best", 0.91, "0.05"),
    ] {
        let run = id(&start_run(s, &ana, "churn", name, None, &[]).await);
        log_params(s, &ana, &run, &[("model", name), ("lr", lr)]).await;
        let history: Vec<Value> = (0..40)
            .map(|step| json!({"key": "auc", "value": auc * f64::from(step + 1) / 40.0, "step": step}))
            .chain((0..40).map(|step| json!({"key": "loss", "value": 1.0 / f64::from(step + 1), "step": step})))
            .collect();
        log_metrics(s, &ana, &run, json!(history)).await;
        s.gql_ok(
            &ana,
            "mutation($r: ID!, $v: String!) { setRunTag(runId: $r, key: \"team\", value: $v) { id } }",
            json!({"r": run, "v": format!("team-{name}")}),
        )
        .await;
        finish_run(s, &ana, &run, "FINISHED").await;
        ids.push(run);
    }
    // The keys the project's runs used, in the search syntax, for columns and completion.
    let keys = s
        .gql_ok(
            &ana,
            "{ project(name: \"churn\") { all: runKeys metrics: runKeys(prefix: \"metrics.\") } }",
            json!({}),
        )
        .await;
    assert_eq!(
        keys["project"]["all"],
        json!([
            "metrics.auc",
            "metrics.loss",
            "params.lr",
            "params.model",
            "tags.team"
        ])
    );
    assert_eq!(
        keys["project"]["metrics"],
        json!(["metrics.auc", "metrics.loss"])
    );

    // A prefix longer than any key is refused, not scanned for.
    let long = s
        .gql(
            &ana,
            "query($p: String!) { project(name: \"churn\") { runKeys(prefix: $p) } }",
            json!({"p": "m".repeat(300)}),
        )
        .await;
    assert_eq!(
        long["errors"][0]["extensions"]["code"], "INVALID_INPUT",
        "{long}"
    );
    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, ANA, "/projects/churn").await;
    // The keyboard reaches everything in reading order: skip link, main navigation, the
    // project's sections, the filter, the column chooser, then the table.
    let mut order = Vec::new();
    for _ in 0..18 {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        c.perform_actions(tab).await.unwrap();
        let focused = js(
            c,
            "const e = document.activeElement; return e.id || e.getAttribute('aria-label') || e.textContent.trim()",
        )
        .await;
        order.push(focused.as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        order,
        [
            "Skip to content",
            "Custody",
            "nav-approvals",
            "nav-audit",
            "nav-account",
            "nav-sign-out",
            "Runs",
            "Models",
            "Datasets",
            "Audit",
            "Admin",
            "filter",
            "apply-filter",
            "add-column",
            "add-column-button",
            "compare-selected",
            "sort-metrics.auc",
            "Remove column metrics.auc",
        ]
    );
    // With nothing chosen, the first metrics and params are the columns.
    let head = header_when(c, |_| true).await;
    for column in ["metrics.auc", "metrics.loss", "params.lr", "params.model"] {
        assert!(head.contains(column), "{head}");
    }
    assert!(!head.contains("tags.team"), "{head}");

    // Add a tag column from the offered keys.
    c.find(Locator::Id("add-column"))
        .await
        .unwrap()
        .send_keys("tags.team")
        .await
        .unwrap();
    click(c, "#add-column-button").await;
    header_when(c, |h| h.contains("tags.team")).await;
    let table = rows(c, "runs").await;
    assert!(table.iter().any(|r| r.contains("team-tuned")), "{table:?}");

    // Sort by a metric column, then the other way.
    click(c, "a[id='sort-metrics.auc']").await;
    run_names_when(c, &["baseline", "tuned", "best"]).await;
    let sorted = js(
        c,
        "return document.querySelector(\"th[aria-sort]\").getAttribute('aria-sort')",
    )
    .await;
    assert_eq!(sorted, "ascending");
    click(c, "a[id='sort-metrics.auc']").await;
    run_names_when(c, &["best", "tuned", "baseline"]).await;
    // The view is in the URL: it can be bookmarked and shared.
    let url = c.current_url().await.unwrap();
    assert!(
        url.as_str().contains("order=metrics.auc") && url.as_str().contains("desc=1"),
        "{url}"
    );

    // Remove a column.
    click(c, "a[aria-label='Remove column params.lr']").await;
    let head = header_when(c, |h| !h.contains("params.lr")).await;
    assert!(head.contains("tags.team"), "{head}");
    screenshot(c, "project-columns").await;

    // The filter box completes keys from the keyboard.
    let filter = c.find(Locator::Id("filter")).await.unwrap();
    filter.send_keys("metrics.l").await.unwrap();
    let offered = until_js(
        c,
        "key suggestions",
        "const b = document.getElementById('filter-suggestions'); return b.hidden ? null : b.textContent",
    )
    .await;
    assert_eq!(offered, "metrics.loss");
    filter
        .send_keys(&char::from(Key::Down).to_string())
        .await
        .unwrap();
    filter
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    filter.send_keys("< 0.03").await.unwrap();
    assert_eq!(
        js(c, "return document.getElementById('filter').value").await,
        "metrics.loss < 0.03"
    );
    click(c, "#apply-filter").await;
    wait_for_url(c, "filter=metrics.loss").await;
    assert_eq!(rows(c, "runs").await.len(), 3);
    // A sort key that is not one is refused with the reason, on the page.
    c.goto(&s.url("/projects/churn?order=metrics.auc+sideways"))
        .await
        .unwrap();
    assert!(!text_of(c, "filter-error").await.is_empty());
    // A column that is not a key is refused.
    c.goto(&s.url("/projects/churn?columns=auc")).await.unwrap();
    assert!(text_of(c, "refused-reason").await.contains("metrics.auc"));

    // Tick two runs and compare them.
    c.goto(&s.url("/projects/churn?order=attributes.run_name"))
        .await
        .unwrap();
    click(c, &format!("input[id='select-{}']", ids[0])).await;
    click(c, &format!("input[id='select-{}']", ids[2])).await;
    click(c, "#compare-selected").await;
    assert_eq!(text_of(c, "compare-title").await, "Compare 2 runs");
    let params = rows(c, "param-diff").await;
    // Differences first: model and lr both differ between baseline and best; nothing else.
    assert_eq!(params.len(), 2, "{params:?}");
    assert!(params.iter().all(|p| p.contains("differs")), "{params:?}");
    let metrics = text_of(c, "metric-diff").await;
    assert!(
        metrics.contains("0.91") && metrics.contains("0.71"),
        "{metrics}"
    );
    // One chart per metric, both runs overlaid, drawn from the API's downsampled history.
    until_js(
        c,
        "charts loaded",
        "return document.getElementById('charts').dataset.loaded === '1'",
    )
    .await;
    let charts = js(
        c,
        "return Array.from(document.querySelectorAll('figure.chart')).map(f => [f.querySelector('figcaption').firstChild.textContent, f.dataset.points, f.querySelectorAll('canvas').length])",
    )
    .await;
    assert_eq!(charts, json!([["auc", "80", 1], ["loss", "80", 1]]));
    screenshot(c, "compare").await;
    // Only differences: loss is the same in both runs, so it goes.
    click(c, "#only-differences").await;
    let metrics = text_of(c, "metric-diff").await;
    assert!(
        !metrics.contains("loss") && metrics.contains("auc"),
        "{metrics}"
    );

    // Fewer than two readable runs is said plainly.
    c.goto(&s.url(&format!("/compare?runs={}", ids[0])))
        .await
        .unwrap();
    assert!(text_of(c, "refused-reason")
        .await
        .contains("at least two runs"));

    // Phone width: the table scrolls inside its box and the page does not overflow.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&s.url("/projects/churn")).await.unwrap();
    text_of(c, "runs").await;
    let overflow = js(
        c,
        "return document.documentElement.scrollWidth > window.innerWidth + 1",
    )
    .await;
    assert_eq!(
        overflow,
        json!(false),
        "the project page is wider than a phone"
    );
    screenshot(c, "project-phone").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_runs_charts_grow_live_through_the_session_subscription() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    let run = id(&start_run(s, &ana, "churn", "live", None, &[]).await);
    let points: Vec<Value> = (0..3000)
        .map(|step| json!({"key": "loss", "value": if step == 1234 { 50.0 } else { 1.0 / f64::from(step + 1) }, "step": step}))
        .collect();
    for batch in points.chunks(1000) {
        log_metrics(s, &ana, &run, json!(batch)).await;
    }

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, ANA, &format!("/runs/{run}")).await;
    until_js(
        c,
        "charts loaded",
        "return document.getElementById('charts').dataset.loaded === '1'",
    )
    .await;
    // A long history is downsampled by the server, and says so.
    let loss = js(c, "const f = document.querySelector('figure.chart'); return [Number(f.dataset.points), f.querySelector('figcaption').textContent]").await;
    assert!(loss[0].as_i64().unwrap() <= 500, "{loss}");
    assert!(
        loss[1]
            .as_str()
            .unwrap()
            .contains("3000 points, downsampled"),
        "{loss}"
    );
    until_js(
        c,
        "the subscription",
        "return document.getElementById('charts').dataset.following === '1'",
    )
    .await;

    // A new key logged now appears as a new chart, and the run's end shows, without reloading.
    log_metrics(s, &ana, &run, json!([{"key": "accuracy", "value": 0.5, "step": 1}, {"key": "accuracy", "value": 0.7, "step": 2}])).await;
    let grown = until_js(
        c,
        "a live chart",
        "const f = Array.from(document.querySelectorAll('figure.chart')).find(f => f.querySelector('figcaption').textContent.startsWith('accuracy')); return f ? f.dataset.points : null",
    )
    .await;
    assert_eq!(grown, "2");
    screenshot(c, "run-charts").await;
    finish_run(s, &ana, &run, "FINISHED").await;
    until_js(
        c,
        "the run's end",
        "return document.getElementById('run-status').textContent === 'FINISHED'",
    )
    .await;

    // The session counts on the socket only with the page's CSRF value: a page of another site
    // cannot read it, so it cannot subscribe as the visitor.
    for (payload, expect) in [
        (json!({}), "refused"),
        (json!({"csrf": "guess"}), "refused"),
        (json!({"csrf": "PAGE"}), "connection_ack"),
    ] {
        let script = format!(
            "const done = arguments[0];
             const csrf = document.getElementById('charts').dataset.csrf;
             const payload = JSON.parse('{}'.replace('PAGE', csrf));
             const ws = new WebSocket('ws://' + location.host + '/graphql', 'graphql-transport-ws');
             ws.onopen = () => ws.send(JSON.stringify({{type: 'connection_init', payload}}));
             ws.onmessage = e => {{ done(JSON.parse(e.data).type); ws.close(); }};
             ws.onclose = e => done('refused');",
            payload
        );
        let answer = c.execute_async(&script, vec![]).await.unwrap();
        assert_eq!(answer, expect, "{payload}");
    }

    c.set_window_size(390, 844).await.unwrap();
    c.refresh().await.unwrap();
    until_js(
        c,
        "charts loaded",
        "return document.getElementById('charts').dataset.loaded === '1'",
    )
    .await;
    let overflow = js(
        c,
        "return document.documentElement.scrollWidth > window.innerWidth + 1",
    )
    .await;
    assert_eq!(overflow, json!(false), "the run page is wider than a phone");
    screenshot(c, "run-phone").await;
    browser.close().await;
}
