//! The approvals inbox: pending promotions the person may decide, and their decisions.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{form_session, layout, query, refused, show};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(inbox).service(decide);
}

const INBOX: &str = "query($first: Int!) {
  promotions(status: PENDING, first: $first) { edges { node {
    id stage comment createdAt expiresAt requiredApprovals approverGroup policyResult policyInput
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
                .map(|e| with_evidence(e["node"].clone()))
                .partition(|p| p["viewerCanDecide"] == json!(true));
            Ok(json!({"decide": mine, "others": others}))
        },
    )
    .await
}

/// What deciding needs beside the request itself, from the input document the policies
/// evaluated (as the caller may see it: datasets of projects they cannot read are left out):
/// the version's metrics against the version that held the target stage when it was asked
/// for, and its upstream datasets and code commits. The same evidence the mailed approval page
/// shows, so every approver decides on the same facts whichever way they come.
fn with_evidence(mut promotion: Value) -> Value {
    let input = promotion["policyInput"].take();
    let candidate = input["model_version"]["metrics"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let current = input["current"]["metrics"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let primary = input["model"]["primary_metric"].as_str();
    let higher_is_better = input["model"]["higher_is_better"] != json!(false);
    let mut keys: Vec<&String> = candidate.keys().chain(current.keys()).collect();
    keys.sort();
    keys.dedup();
    let metrics: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let (new, old) = (candidate.get(k), current.get(k));
            // Better or worse only where the model says which way its primary metric goes.
            let verdict = match (
                primary == Some(k.as_str()),
                new.and_then(Value::as_f64),
                old.and_then(Value::as_f64),
            ) {
                (true, Some(n), Some(o)) if n != o => {
                    if (n > o) == higher_is_better {
                        "better"
                    } else {
                        "worse"
                    }
                }
                _ => "",
            };
            json!({"key": k, "candidate": new, "current": old,
                   "primary": primary == Some(k.as_str()), "verdict": verdict})
        })
        .collect();
    promotion["evidence"] = json!({
        "metrics": metrics,
        "current_version": input["current"]["version"],
        "datasets": input["lineage"]["datasets"].as_array().cloned().unwrap_or_default(),
        "hidden_datasets": input["lineage"]["hidden_datasets"],
        "code_commits": input["lineage"]["code_commits"].as_array().cloned().unwrap_or_default(),
    });
    promotion
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
    let session = match form_session(&state, &http, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
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
