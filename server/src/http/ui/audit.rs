//! The audit log page: a project's entries (or everything, for server admins), filtered, with export links.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{query, refused, show, signed_in};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::{see_other, with_query};
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(audit).service(compliance);
}

const AUDIT: &str = "query($p: String, $action: String, $actor: String, $since: DateTime,
                           $until: DateTime, $first: Int!, $after: String) {
  me { memberships(first: 200) { project { name } } }
  auditLog(project: $p, action: $action, actor: $actor, since: $since, until: $until,
           first: $first, after: $after) {
    edges { node { seq at actor action subjectKind subjectId } }
    pageInfo { hasNextPage endCursor } }
}";

/// Audit entries shown per page.
const AUDIT_PER_PAGE: i64 = 100;

#[derive(Deserialize)]
struct AuditQuery {
    project: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

/// A time typed into the filter: RFC 3339, a date (its midnight UTC), or a date and time
/// without a zone (read as UTC), answered as RFC 3339.
fn filter_time(name: &str, text: Option<&str>) -> Result<Option<String>, Error> {
    let Some(text) = text else {
        return Ok(None);
    };
    let parsed = crate::audit::export::parse_time(text).or_else(|e| {
        [
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d %H:%M:%S",
        ]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
        .ok_or(e)
    });
    match parsed {
        Ok(t) => Ok(Some(crate::audit::rfc3339(t))),
        Err(e) => Err(Error::invalid(format!("{name}: {e}"))),
    }
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
    let acted_by = blank(&params.actor);
    let (since_text, until_text) = (blank(&params.since), blank(&params.until));
    let bounds = filter_time("from", since_text.as_deref())
        .and_then(|s| Ok((s, filter_time("until", until_text.as_deref())?)));
    let (since, until) = match bounds {
        Ok(b) => b,
        Err(e) => return super::refused(&e),
    };
    if chosen.is_none() {
        // Only server admins read the whole log: anyone else starts with their first project.
        if let Some(first) = first_project_unless_admin(&state, &schema, &http).await {
            return see_other(&with_query("/audit", "project", &first));
        }
    }
    let variables = json!({"p": chosen, "action": action, "actor": acted_by, "since": since,
                           "until": until, "first": AUDIT_PER_PAGE, "after": params.after});
    show(
        &state,
        &schema,
        &http,
        "ui/audit.html",
        (AUDIT, variables),
        |mut data| {
            // The same selection in the page's own terms (`since`/`until`) and in the export's
            // (`from` inclusive, `to` exclusive: the same bounds).
            let selection = |export: bool, extra: &[(&str, &str)]| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                let (from, to) = if export {
                    ("from", "to")
                } else {
                    ("since", "until")
                };
                let pairs = [
                    ("project", &chosen),
                    ("action", &action),
                    ("actor", &acted_by),
                    (from, &since),
                    (to, &until),
                ];
                for (k, v) in pairs {
                    if let Some(v) = v {
                        query.append_pair(k, v);
                    }
                }
                for (k, v) in extra {
                    query.append_pair(k, v);
                }
                query.finish()
            };
            if let Some(cursor) = data["auditLog"]["pageInfo"]["endCursor"].as_str() {
                data["next_page"] =
                    json!(format!("/audit?{}", selection(false, &[("after", cursor)])));
            }
            data["export_jsonl"] = json!(format!(
                "/api/audit/export?{}",
                selection(true, &[("format", "jsonl")])
            ));
            data["export_csv"] = json!(format!(
                "/api/audit/export?{}",
                selection(true, &[("format", "csv")])
            ));
            data["project"] = json!(chosen);
            data["action"] = json!(action.as_deref().unwrap_or(""));
            data["actor"] = json!(acted_by.as_deref().unwrap_or(""));
            data["since"] = json!(since_text.as_deref().unwrap_or(""));
            data["until"] = json!(until_text.as_deref().unwrap_or(""));
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

#[derive(Deserialize)]
struct ReportOf {
    project: Option<String>,
    model: Option<String>,
    version: Option<String>,
}

/// The compliance report of a model version named by project, model and version: looked up
/// through the API as the person, then opened at `/api/compliance/{id}`, which takes the same
/// browser session on a GET (the report is read-only) and authorizes it there.
#[get("/compliance")]
async fn compliance(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    params: web::Query<ReportOf>,
) -> HttpResponse {
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    let text = |v: &Option<String>, what: &str| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid(format!("{what} is required")))
    };
    let named = text(&params.project, "a project").and_then(|p| {
        let model = text(&params.model, "a model")?;
        let version: i32 = text(&params.version, "a version")?
            .parse()
            .map_err(|_| Error::invalid("the version is a number, like 3"))?;
        Ok((p, model, version))
    });
    let (project, model, version) = match named {
        Ok(n) => n,
        Err(e) => return refused(&e),
    };
    let document = "query($p: String!, $m: String!, $v: Int!) {
      modelVersion(project: $p, model: $m, version: $v) { id } }";
    let variables = json!({"p": project, "m": model, "v": version});
    match query(&schema, &state, &session, document, variables).await {
        Ok(data) => match data["modelVersion"]["id"].as_str() {
            Some(id) => see_other(&format!("/api/compliance/{id}?format=html")),
            None => refused(&Error::not_found(format!(
                "no version {version} of model `{model}` in `{project}`"
            ))),
        },
        Err(e) => refused(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::filter_time;

    #[test]
    fn filter_times_are_dates_rfc3339_or_zoneless_utc() {
        let t = |s: &str| filter_time("from", Some(s)).unwrap().unwrap();
        assert_eq!(t("2026-11-01"), "2026-11-01T00:00:00.000000Z");
        assert_eq!(
            t("2026-11-01T09:30:00+01:00"),
            "2026-11-01T08:30:00.000000Z"
        );
        assert_eq!(t("2026-11-01T09:30"), "2026-11-01T09:30:00.000000Z");
        assert_eq!(t("2026-11-01 09:30:15"), "2026-11-01T09:30:15.000000Z");
        assert_eq!(filter_time("from", None).unwrap(), None);
        let err = filter_time("until", Some("yesterday")).unwrap_err();
        assert!(err.to_string().starts_with("until: "), "{err}");
    }
}
