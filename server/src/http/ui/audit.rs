//! The audit log page: a project's entries (or everything, for server admins), filtered, with export links.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{query, show, signed_in};
use crate::graphql::CustodySchema;
use crate::http::pages::{see_other, with_query};
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(audit);
}

const AUDIT: &str = "query($p: String, $action: String, $first: Int!, $after: String) {
  me { memberships(first: 200) { project { name } } }
  auditLog(project: $p, action: $action, first: $first, after: $after) {
    edges { node { seq at actor action subjectKind subjectId } }
    pageInfo { hasNextPage endCursor } }
}";

/// Audit entries shown per page.
const AUDIT_PER_PAGE: i64 = 100;

#[derive(Deserialize)]
struct AuditQuery {
    project: Option<String>,
    action: Option<String>,
    after: Option<String>,
}

/// The audit log of one project (its members) or of everything (server admins), filtered by
/// action, a page at a time, with the export links of the same selection.
#[get("/audit")]
async fn audit(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    params: web::Query<AuditQuery>,
) -> HttpResponse {
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (chosen, action) = (blank(&params.project), blank(&params.action));
    if chosen.is_none() {
        // Only server admins read the whole log: anyone else starts with their first project.
        if let Some(first) = first_project_unless_admin(&state, &schema, &http).await {
            return see_other(&with_query("/audit", "project", &first));
        }
    }
    let variables =
        json!({"p": chosen, "action": action, "first": AUDIT_PER_PAGE, "after": params.after});
    show(
        &state,
        &schema,
        &http,
        "ui/audit.html",
        (AUDIT, variables),
        |mut data| {
            let selection = |extra: &[(&str, &str)]| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(p) = &chosen {
                    query.append_pair("project", p);
                }
                for (k, v) in extra {
                    query.append_pair(k, v);
                }
                query.finish()
            };
            if let Some(cursor) = data["auditLog"]["pageInfo"]["endCursor"].as_str() {
                let mut extra = vec![("after", cursor)];
                if let Some(a) = &action {
                    extra.push(("action", a));
                }
                data["next_page"] = json!(format!("/audit?{}", selection(&extra)));
            }
            data["export_jsonl"] = json!(format!(
                "/api/audit/export?{}",
                selection(&[("format", "jsonl")])
            ));
            data["export_csv"] = json!(format!(
                "/api/audit/export?{}",
                selection(&[("format", "csv")])
            ));
            data["project"] = json!(chosen);
            data["action"] = json!(action.as_deref().unwrap_or(""));
            Ok(data)
        },
    )
    .await
}

/// The first project of a signed-in person who is not a server admin.
async fn first_project_unless_admin(
    state: &AppState,
    schema: &CustodySchema,
    http: &HttpRequest,
) -> Option<String> {
    let session = signed_in(state, http).await.ok()?;
    let document = "{ me { isAdmin memberships(first: 1) { project { name } } } }";
    let me = query(schema, state, &session, document, json!({}))
        .await
        .ok()?;
    if me["me"]["isAdmin"] == json!(true) {
        return None;
    }
    me["me"]["memberships"][0]["project"]["name"]
        .as_str()
        .map(str::to_owned)
}
