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

fn engine() -> &'static tera::Tera {
    static ENGINE: OnceLock<tera::Tera> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .expect("the built-in templates parse (checked by templates::tests)");
        tera.autoescape_on(vec![".html"]);
        tera
    })
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
            let mut ui = json!({
                "me": {"email": "a@x", "memberships": [{"role": "ADMIN", "project": {"name": "<b>ship</b>", "description": null}}]},
                "csrf": "c", "signed_in_as": "a@x", "filter": "<b>ship</b>", "next_page": "/projects/p?after=x",
                "promotions": {"edges": [{"node": {"stage": "production", "createdAt": "t", "requestedBy": {"email": "a@x"},
                    "modelVersion": {"version": 2, "model": {"name": "<b>ship</b>"}, "run": {"project": {"name": "p"}}}}}]},
                "project": {"name": "p", "description": "<b>ship</b>"},
                "searchRuns": {"edges": [{"node": {"id": "r", "name": "<b>ship</b>", "status": "RUNNING", "startedAt": "t", "endedAt": null}}],
                    "pageInfo": {"hasNextPage": true, "endCursor": "x"}},
                "run": {"id": "r", "name": "<b>ship</b>", "status": "FINISHED", "startedAt": "t", "endedAt": "t", "tags": {},
                    "project": {"name": "p"}, "params": [{"key": "k", "value": "<b>ship</b>"}], "artifacts": [{"path": "m/<b>ship</b>", "size": 1}],
                    "inputs": [{"version": 1, "dataset": {"name": "d"}}], "codeCommit": {"repository": "r", "commit": "c"}},
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
}
