//! The approvals inbox: pending promotions the person may decide, and their decisions.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{layout, query, refused, show, signed_in};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(inbox).service(decide);
}

const INBOX: &str = "query($first: Int!) {
  promotions(status: PENDING, first: $first) { edges { node {
    id stage comment createdAt expiresAt requiredApprovals approverGroup policyResult
    viewerCanDecide decisionBlockedBy requestedBy { email }
    approvals { approver { email } decision comment }
    modelVersion { id version model { name } run { id name project { name } } } } } }
}";

/// Pending promotions of the person's projects, those they may decide first, each with its
/// decision form.
#[get("/approvals")]
async fn inbox(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let request = (INBOX, json!({"first": 100}));
    show(
        &state,
        &schema,
        &http,
        "ui/approvals.html",
        request,
        |data| {
            let pending = data["promotions"]["edges"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let (mine, others): (Vec<Value>, Vec<Value>) = pending
                .into_iter()
                .map(|e| e["node"].clone())
                .partition(|p| p["viewerCanDecide"] == json!(true));
            Ok(json!({"decide": mine, "others": others}))
        },
    )
    .await
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: String,
    comment: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// A decision from the inbox: the session's own (its CSRF value), through the API's mutation.
#[post("/approvals/{id}")]
async fn decide(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    id: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    if form.csrf != session.csrf_token {
        return refused(&Error::forbidden(
            "the form's security check failed: decide from the inbox page of this server",
        ));
    }
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let document = match form.decision.as_str() {
        "approve" => "mutation($id: ID!, $c: String) { decided: approvePromotion(id: $id, comment: $c) { status stage } }",
        "reject" => "mutation($id: ID!, $c: String!) { decided: rejectPromotion(id: $id, comment: $c) { status stage } }",
        other => return refused(&Error::invalid(format!("unknown decision `{other}`"))),
    };
    let variables = json!({"id": id.as_str(), "c": comment});
    match query(&schema, &state, &session, document, variables).await {
        Ok(data) => page(
            StatusCode::OK,
            "ui/decided.html",
            layout(
                &session,
                json!({"decision": form.decision, "promotion": data["decided"]}),
            ),
        ),
        Err(e) => refused(&e),
    }
}
