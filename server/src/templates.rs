//! Pages and mails rendered with tera from `web/templates`, built into the binary so a release
//! needs no files beside it. `templates::tests` renders every one, so a broken template fails
//! the build's tests, not a mail at 3 a.m.

use std::sync::OnceLock;

use serde_json::Value;

use crate::error::{Error, Result};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../web/templates/base.html")),
    (
        "approve.html",
        include_str!("../../web/templates/approve.html"),
    ),
    (
        "approve_done.html",
        include_str!("../../web/templates/approve_done.html"),
    ),
    (
        "approve_refused.html",
        include_str!("../../web/templates/approve_refused.html"),
    ),
    (
        "email/approval_request.txt",
        include_str!("../../web/templates/email/approval_request.txt"),
    ),
    (
        "email/approval_request.html",
        include_str!("../../web/templates/email/approval_request.html"),
    ),
    (
        "email/emergency_archive.txt",
        include_str!("../../web/templates/email/emergency_archive.txt"),
    ),
    (
        "email/emergency_archive.html",
        include_str!("../../web/templates/email/emergency_archive.html"),
    ),
    (
        "email/dataset_recall.txt",
        include_str!("../../web/templates/email/dataset_recall.txt"),
    ),
    (
        "email/dataset_recall.html",
        include_str!("../../web/templates/email/dataset_recall.html"),
    ),
    // Rendered and checked by `audit::report::tests`.
    (
        "sign_in.html",
        include_str!("../../web/templates/sign_in.html"),
    ),
    (
        "sign_in_sent.html",
        include_str!("../../web/templates/sign_in_sent.html"),
    ),
    (
        "account.html",
        include_str!("../../web/templates/account.html"),
    ),
    (
        "email/sign_in.txt",
        include_str!("../../web/templates/email/sign_in.txt"),
    ),
    (
        "email/sign_in.html",
        include_str!("../../web/templates/email/sign_in.html"),
    ),
    (
        "device.html",
        include_str!("../../web/templates/device.html"),
    ),
    (
        "device_done.html",
        include_str!("../../web/templates/device_done.html"),
    ),
    (
        "email/invitation.txt",
        include_str!("../../web/templates/email/invitation.txt"),
    ),
    (
        "email/invitation.html",
        include_str!("../../web/templates/email/invitation.html"),
    ),
    (
        "ui/layout.html",
        include_str!("../../web/templates/ui/layout.html"),
    ),
    (
        "ui/home.html",
        include_str!("../../web/templates/ui/home.html"),
    ),
    (
        "ui/project.html",
        include_str!("../../web/templates/ui/project.html"),
    ),
    (
        "ui/approvals.html",
        include_str!("../../web/templates/ui/approvals.html"),
    ),
    (
        "ui/decided.html",
        include_str!("../../web/templates/ui/decided.html"),
    ),
    (
        "ui/audit.html",
        include_str!("../../web/templates/ui/audit.html"),
    ),
    (
        "ui/run.html",
        include_str!("../../web/templates/ui/run.html"),
    ),
    (
        "ui/compare.html",
        include_str!("../../web/templates/ui/compare.html"),
    ),
    (
        "ui/admin.html",
        include_str!("../../web/templates/ui/admin.html"),
    ),
    (
        "ui/admin_done.html",
        include_str!("../../web/templates/ui/admin_done.html"),
    ),
    (
        "ui/tokens.html",
        include_str!("../../web/templates/ui/tokens.html"),
    ),
    (
        "compliance_report.html",
        include_str!("../../web/templates/compliance_report.html"),
    ),
];

/// The model, version, lineage and dataset pages (`http::ui::models`), rendered by their own
/// test with their own context.
const MODEL_TEMPLATES: &[(&str, &str)] = &[
    (
        "ui/models.html",
        include_str!("../../web/templates/ui/models.html"),
    ),
    (
        "ui/model.html",
        include_str!("../../web/templates/ui/model.html"),
    ),
    (
        "ui/model_version.html",
        include_str!("../../web/templates/ui/model_version.html"),
    ),
    (
        "ui/promotion_requested.html",
        include_str!("../../web/templates/ui/promotion_requested.html"),
    ),
    (
        "ui/lineage_graph.html",
        include_str!("../../web/templates/ui/lineage_graph.html"),
    ),
    (
        "ui/lineage.html",
        include_str!("../../web/templates/ui/lineage.html"),
    ),
    (
        "ui/datasets.html",
        include_str!("../../web/templates/ui/datasets.html"),
    ),
    (
        "ui/dataset.html",
        include_str!("../../web/templates/ui/dataset.html"),
    ),
];

fn engine() -> &'static tera::Tera {
    static ENGINE: OnceLock<tera::Tera> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().chain(MODEL_TEMPLATES).copied())
            .expect("the built-in templates parse (checked by templates::tests)");
        tera.autoescape_on(vec![".html"]);
        tera.register_filter("num", number);
        tera.register_filter("when", moment);
        tera
    })
}

/// `{{ x | num }}`: a number as people read it (at most six significant digits: 0.83, not
/// 0.8299999999999998); anything else as it is.
fn number(value: &Value, _: &std::collections::HashMap<String, Value>) -> tera::Result<Value> {
    Ok(match value.as_f64() {
        Some(x) if value.is_f64() && x.is_finite() && x != 0.0 => {
            let digits = (5 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
            let text = format!("{x:.digits$}");
            let text = if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_owned()
            } else {
                text
            };
            Value::String(text)
        }
        _ => value.clone(),
    })
}

/// `{{ t | when }}`: an RFC 3339 time as `2026-12-03 07:32 UTC`; anything else as it is.
fn moment(value: &Value, _: &std::collections::HashMap<String, Value>) -> tera::Result<Value> {
    Ok(value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            let utc = t.with_timezone(&chrono::Utc);
            Value::String(utc.format("%Y-%m-%d %H:%M UTC").to_string())
        })
        .unwrap_or_else(|| value.clone()))
}

/// Renders a template; every page's context also holds `assets` (the static files' URLs).
pub fn render(name: &str, context: &Value) -> Result<String> {
    let mut context = tera::Context::from_value(context.clone()).map_err(Error::internal)?;
    context.insert("assets", &crate::assets::urls());
    engine()
        .render(name, &context)
        .map_err(|e| Error::internal(anyhow::anyhow!("rendering {name}: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_times_read_well() {
        let none = std::collections::HashMap::new();
        let num = |v: Value| number(&v, &none).unwrap();
        assert_eq!(num(json!(0.8299999999999998)), json!("0.83"));
        assert_eq!(num(json!(0.000333333333)), json!("0.000333333"));
        assert_eq!(num(json!(123456.789)), json!("123457"));
        assert_eq!(num(json!(-2.5)), json!("-2.5"));
        assert_eq!(num(json!(7)), json!(7));
        assert_eq!(num(json!("x")), json!("x"));
        let when = moment(&json!("2026-12-03T07:32:05.585455+00:00"), &none).unwrap();
        assert_eq!(when, json!("2026-12-03 07:32 UTC"));
    }

    #[test]
    fn every_template_renders() {
        let promotion = json!({
            "link": "http://x/approve/t", "model": "churn", "version": 3, "stage": "production",
            "requester": "a@x", "comment": "<b>ship</b>", "required_approvals": 2, "approver_group": "privacy",
            "expires_at": "2026-01-01T00:00:00Z", "manifest_sha256": "ab", "metrics": {"auc": 0.9},
        });
        let page = json!({
            "csrf": "c", "approver": "b@x", "model": "churn", "version": 3, "stage": "production",
            "requester": "a@x", "comment": "<b>ship</b>", "status": "PENDING", "expires_at": "x",
            "manifest_sha256": "ab", "policy_digest": "cd", "required_approvals": 2, "approver_group": null,
            "metrics": [{"key": "auc", "candidate": 0.9, "current": 0.8}], "current_version": 2,
            "datasets": [{"dataset": "d", "version": 1, "sha256": "ef", "tags": ["pii"]}],
            "code_commits": [{"repository": "r", "commit": "c", "dirty": false}],
            "policy": {"deny": [], "required_approvals": 2}, "approvals": [{"approver": "c@x", "decision": "approve", "comment": null, "via": "email", "at": "t"}],
            "decided": false, "title": "t", "message": "m", "action": "/approve/t",
            "sign_in_needed": null, "sign_in_url": "/sign-in", "signed_in": false,
        });
        let sign_in = json!({
            "csrf": "c", "next": "/account", "oidc_label": "<b>ship</b>", "oidc_url": "/sign-in/oidc",
            "email_links": true, "email": "<b>ship</b>@x", "minutes": 15, "method": "session_oidc",
            "signed_in_at": "t", "groups": ["<b>ship</b>"], "is_admin": false, "link": "http://x/sign-in/email/s",
            "project": "<b>ship</b>", "role": "viewer", "inviter": "a@x", "expires_at": "t",
            "code": "BCDF-GHJK", "client": "<b>ship</b>", "approved": true,
        });
        for (name, _) in TEMPLATES {
            if matches!(
                *name,
                "base.html" | "compliance_report.html" | "ui/layout.html"
            ) {
                continue;
            }
            let emergency = json!({
                "project": "p", "model": "churn", "version": 3, "from_stage": "production",
                "by": "a@x", "reason": "<b>leak</b>", "cancelled": 1, "manifest_sha256": "ab",
            });
            let recall = json!({
                "project": "p", "dataset": "<b>leak</b>", "version": 3, "reason": "<b>leak</b>",
                "by": "a@x", "affected_model_versions": 2,
            });
            // The runs table and compare pages' own keys (one json! would be too deep a macro).
            let runs_ui = json!({
                "offered": ["metrics.<b>ship</b>"], "columns": "metrics.a", "order": "metrics.a", "desc": true,
                "headers": [{"key": "metrics.<b>ship</b>", "sorted": "ascending", "sort_url": "/projects/p?order=a", "remove_url": "/projects/p"}],
                "runs": [{"id": "r", "name": "<b>ship</b>", "status": "FINISHED", "startedAt": "t", "cells": [0.5, "<b>ship</b>", null],
                    "project": {"name": "p"}, "codeCommit": null, "inputs": [{"version": 1, "dataset": {"name": "<b>ship</b>"}}]}],
                "first_page": "/projects/p", "after": true, "chart_keys": ["<b>ship</b>"], "run_ids": ["r"], "run_names": ["<b>ship</b>"],
                "params": [{"key": "<b>ship</b>", "values": ["<b>ship</b>", null], "differs": true}],
                "metrics": [{"key": "<b>ship</b>", "values": [0.5, null], "differs": false}],
                "only_differences": false, "all_url": "/compare?runs=a", "diff_url": "/compare?runs=a&diff=1",
                "tags": [{"key": "<b>ship</b>", "value": "<b>ship</b>"}]
            });
            let mut ui = json!({
                "me": {"email": "a@x", "memberships": [{"role": "ADMIN", "project": {"name": "<b>ship</b>", "description": null}}]},
                "csrf": "c", "signed_in_as": "a@x", "filter": "<b>ship</b>", "next_page": "/projects/p?after=x",
                "promotions": {"edges": [{"node": {"stage": "production", "createdAt": "t", "requestedBy": {"email": "a@x"},
                    "modelVersion": {"version": 2, "model": {"name": "<b>ship</b>"}, "run": {"project": {"name": "p"}}}}}]},
                "project": {"name": "p", "description": "<b>ship</b>"},
                "searchRuns": {"edges": [{"node": {"id": "r", "name": "<b>ship</b>", "status": "RUNNING", "startedAt": "t", "endedAt": null}}],
                    "pageInfo": {"hasNextPage": true, "endCursor": "x"}},
                "run": {"id": "r", "name": "<b>ship</b>", "status": "FINISHED", "startedAt": "t", "endedAt": "t", "tags": {},
                    "project": {"name": "p"}, "params": [{"key": "k", "value": "<b>ship</b>"}], "artifacts": [{"path": "m/<b>ship</b>", "size": 1, "sha256": "ab"}],
                    "inputs": [{"version": 1, "sha256": "ab", "dataset": {"name": "d", "project": {"name": "p"}}}],
                    "codeCommit": {"repository": "r", "commit": "c", "branch": "<b>ship</b>", "dirty": true},
                    "latestMetrics": [{"key": "<b>ship</b>", "value": 0.9, "step": 3}]},
                "compareRuns": {"metrics": [{"key": "auc", "values": [0.9]}]},
                "decide": [{"id": "p1", "stage": "staging", "comment": "<b>ship</b>", "createdAt": "t", "expiresAt": "t",
                    "requiredApprovals": 1, "approverGroup": null, "policyResult": {"deny": []}, "requestedBy": {"email": "a@x"},
                    "approvals": [{"approver": {"email": "b@x"}, "decision": "approve"}],
                    "modelVersion": {"version": 1, "model": {"name": "m"}, "run": {"id": "r", "name": null, "project": {"name": "p"}}}}],
                "others": [{"stage": "production", "decisionBlockedBy": "<b>ship</b>",
                    "modelVersion": {"version": 2, "model": {"name": "m"}}}],
                "decision": "approve", "promotion": {"stage": "staging", "status": "APPLIED"},
                "auditLog": {"edges": [{"node": {"seq": 1, "at": "t", "actor": "<b>ship</b>", "action": "run.start", "subjectKind": "run", "subjectId": "r"}}],
                    "pageInfo": {"hasNextPage": true, "endCursor": "x"}},
                "export_jsonl": "/api/audit/export?format=jsonl", "export_csv": "/api/audit/export?format=csv", "action": "",
            });
            if let (Some(ui), Some(extra)) = (ui.as_object_mut(), runs_ui.as_object()) {
                ui.extend(extra.clone());
            }
            // The administration pages, the home page's recent lists and the inbox's evidence.
            let admin = json!({
                "recentActivity": [{"seq": 1, "at": "t", "actor": "<b>ship</b>", "action": "run.start", "project": "p"}],
                "groups": ["<b>ship</b>"], "done": true, "message": "<b>ship</b>", "secret": "s", "back": "/projects/p/admin",
                "serviceAccounts": [{"name": "ci", "identity": "service:p/ci", "role": "CONTRIBUTOR", "createdAt": "t",
                    "tokens": [{"id": "t", "name": "<b>ship</b>", "readOnly": true, "expiresAt": "t", "lastUsedAt": null, "revokedAt": null}]}],
                "accessTokens": [{"id": "t", "name": "<b>ship</b>", "readOnly": false, "createdAt": "t", "expiresAt": "t",
                    "lastUsedAt": null, "revokedAt": null, "project": null}],
                "actor": "<b>ship</b>", "since": "", "until": "",
            });
            for (k, v) in admin.as_object().unwrap() {
                ui[k] = v.clone();
            }
            ui["me"]["recentRuns"] = json!([{"id": "r", "name": "<b>ship</b>", "status": "RUNNING", "startedAt": "t", "project": {"name": "p"}}]);
            ui["project"]["approvalSignIn"] = json!("LINK");
            ui["project"]["approvalSignInIsDefault"] = json!(true);
            ui["project"]["members"] =
                json!([{"role": "ADMIN", "groups": ["<b>ship</b>"], "user": {"email": "a@x"}}]);
            ui["project"]["invitations"] = json!([{"id": "i", "email": "<b>ship</b>@x", "role": "VIEWER", "groups": [], "expiresAt": "t", "invitedBy": null}]);
            ui["project"]["webhooks"] =
                json!([{"id": "w", "url": "https://x/<b>ship</b>", "createdAt": "t"}]);
            ui["decide"][0]["evidence"] = json!({"metrics": [{"key": "auc", "candidate": 0.9, "current": 0.8, "primary": true, "verdict": "better"}],
                "current_version": 2, "hidden_datasets": 1,
                "datasets": [{"dataset": "<b>ship</b>", "version": 1, "sha256": "ab", "tags": ["pii"]}],
                "code_commits": [{"repository": "r", "commit": "c", "dirty": true, "branch": "main"}]});
            let context = if name.starts_with("ui/") {
                &ui
            } else if name.starts_with("email/emergency") {
                &emergency
            } else if name.starts_with("email/dataset_recall") {
                &recall
            } else if name.contains("sign_in")
                || name.starts_with("account")
                || name.contains("invitation")
                || name.starts_with("device")
            {
                &sign_in
            } else if name.starts_with("email/") {
                &promotion
            } else {
                &page
            };
            let out = render(name, context).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(
                !(out.contains("<b>ship</b>") || out.contains("<b>leak</b>"))
                    || name.ends_with(".txt"),
                "{name} must escape HTML"
            );
        }
    }

    #[test]
    fn model_pages_render_and_escape() {
        let ship = "<b>ship</b>";
        let node = json!({
            "dom_id": "node-1", "kind": "run", "kind_slug": "run", "name": ship, "short": ship,
            "href": "/runs/1", "focus": false, "focus_url": "/lineage/run/1?up=2&down=1",
            "expand_url": "/lineage/x?expand=up:run:1", "collapse_url": "/lineage/x", "distance": 1,
            "side": "up", "x": 1, "y": 1, "text_x": 1, "kind_y": 1, "name_y": 1, "control_x": 1, "control_y": 1,
        });
        let graph = json!({
            "width": 10, "height": 10, "node_w": 1, "node_h": 1, "nodes": [node],
            "columns": [{"layer": -1, "heading": "1 step upstream", "nodes": [node]}],
            "edges": [{"path": "M0,0", "relation": ship, "from": ship, "to": ship}],
        });
        let version = json!({
            "id": "v", "version": 1, "stage": ship, "aliases": [ship], "tag_list": [ship],
            "description": ship, "createdAt": "t", "manifestSha256": "ab",
            "artifacts": [{"path": ship, "size": 1, "sha256": "ab"}],
            "model": {"name": ship}, "run": {"id": "r", "name": ship, "status": "FINISHED",
                "codeCommit": {"repository": ship, "commit": "c", "dirty": true}},
            "recalledUpstream": [{"id": "d", "version": 2, "uri": ship,
                "dataset": {"name": ship, "project": {"name": ship}},
                "recall": {"reason": ship, "recalledAt": "t", "recalledBy": {"email": ship}}}],
        });
        let mut context = json!({
            "csrf": "c", "signed_in_as": "a@x",
            "project": {"name": ship, "description": ship, "stages": [],
                "datasets": [{"name": ship, "description": ship, "createdAt": "t"}]},
            "models": [{"name": ship, "description": ship, "tag_list": [ship],
                "latest": [{"version": 1, "stage": ship}],
                "aliases": [{"alias": ship, "modelVersion": {"version": 1}}]}],
            "model": {"name": ship, "description": ship, "createdAt": "t", "primaryMetric": ship,
                "higherIsBetter": true, "tag_list": [ship], "aliases": [{"alias": ship, "modelVersion": {"version": 1}}]},
            "versions": [{"version": 1, "stage": ship, "aliases": [ship], "tag_list": [ship], "createdAt": "t",
                "run": {"id": "r", "name": ship}}],
            "next_after": 100,
        });
        context["history"] = json!([{"stage": ship, "status": "PENDING", "createdAt": "t", "decidedAt": null,
            "requestedBy": {"email": ship}, "modelVersion": {"version": 1},
            "approvals": [{"approver": {"email": ship}, "decision": "APPROVE"}]}]);
        context["history_truncated"] = json!(true);
        context["version"] = version;
        context["model_url"] = json!("/m");
        context["version_url"] = json!("/m/versions/1");
        context["dry_runs"] = json!([{"stage": ship, "requires_approval": true, "current": false,
            "decision": {"deny": [ship], "requiredApprovals": 1, "approverGroup": ship}}]);
        context["promotions"] = json!([{"stage": ship, "status": "DENIED", "requestedBy": {"email": ship},
            "createdAt": "t", "decidedAt": null}]);
        context["graph"] = graph;
        context["lineage_url"] = json!("/lineage/model_version/v");
        context["promotion"] = json!({"status": "DENIED", "stage": ship, "requiredApprovals": 1,
            "approverGroup": ship, "expiresAt": "t", "policyResult": {"deny": [ship]},
            "modelVersion": {"version": 1, "stage": null, "model": {"name": ship}}});
        context["back"] = json!("/m/versions/1");
        context["focus"] = json!({"name": ship, "kind": "run", "href": "/runs/r"});
        context["up"] = json!({"depth": 1, "fewer": "/l?up=0", "more": "/l?up=2"});
        context["down"] = json!({"depth": 1, "fewer": null, "more": "/l?down=2"});
        context["expanded"] = json!(1);
        context["max_expanded"] = json!(10);
        context["reset"] = json!("/l");
        context["dataset"] = json!({"id": "d", "name": ship, "description": ship, "createdAt": "t",
            "project": {"name": ship},
            "versions": [{"id": "dv", "version": 1, "uri": ship, "sha256": "ab", "sizeBytes": 1, "tags": [ship],
                "derivedFrom": [{"version": 1, "dataset": {"name": ship, "project": {"name": ship}}}],
                "consumedBy": [{"id": "r", "name": ship, "project": {"name": "other"}}]}]});
        for (name, _) in MODEL_TEMPLATES {
            let out = render(name, &context).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!out.contains(ship), "{name} must escape HTML");
        }
    }
}
