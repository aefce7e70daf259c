//! Administration pages: a project's members, invitations, webhooks, service accounts and
//! approval sign-in rule (`/projects/{p}/admin`, for the project's admins), and the person's own
//! access tokens (`/account/tokens`).
//!
//! Every form posts back here with the session's CSRF value and runs one public mutation as the
//! person, so the API decides who may do what (a page never has rights of its own) and its
//! refusal message is what the person reads. A new secret (token, webhook key) is shown on the
//! outcome page only: the API never answers it again.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{form_session, layout, query, refused, show};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::sessions::Authenticated;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(project_admin)
        .service(project_action)
        .service(tokens)
        .service(token_action);
}

const ADMIN: &str = "query($p: String!) {
  project(name: $p) {
    name approvalSignIn approvalSignInIsDefault
    members(first: 1000) { role groups user { email } }
    invitations { id email role groups expiresAt invitedBy { email } }
    webhooks { id url createdAt }
  }
  serviceAccounts(project: $p) {
    name identity role createdAt
    tokens { id name readOnly createdAt expiresAt lastUsedAt revokedAt }
  }
}";

/// A project's administration page. The API answers who may see it: null (not found) for
/// outsiders, FORBIDDEN for members who are not admins (its invitations and webhooks are
/// admin-only), so the page refuses exactly as the API does.
#[get("/projects/{project}/admin")]
async fn project_admin(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    project: web::Path<String>,
) -> HttpResponse {
    let name = project.into_inner();
    let request = (ADMIN, json!({"p": name}));
    show(
        &state,
        &schema,
        &http,
        "ui/admin.html",
        request,
        |mut data| {
            if data["project"].is_null() {
                return Err(Error::not_found(format!("no project named `{name}`")));
            }
            data["groups"] = json!(project_groups(&data["project"]["members"]));
            // Service accounts are members too; they are managed in their own section.
            if let Some(members) = data["project"]["members"].as_array_mut() {
                members.retain(|m| {
                    !m["user"]["email"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("service:"))
                });
            }
            Ok(data)
        },
    )
    .await
}

/// Every group some member carries, sorted: what the group fields suggest.
fn project_groups(members: &Value) -> Vec<String> {
    let mut groups: Vec<String> = members
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["groups"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

type Form = HashMap<String, String>;

/// A form field, trimmed; empty counts as absent.
fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn required<'a>(form: &'a Form, name: &str, label: &str) -> Result<&'a str, Error> {
    field(form, name).ok_or_else(|| Error::invalid(format!("{label} is required")))
}

/// A role from a form's select; the four roles only.
fn role(form: &Form, allowed: &[&str]) -> Result<String, Error> {
    let role = required(form, "role", "a role")?;
    if allowed.contains(&role) {
        Ok(role.to_owned())
    } else {
        Err(Error::invalid(format!(
            "role must be one of {}",
            allowed.join(", ")
        )))
    }
}

/// Groups typed as a comma-separated list.
fn groups(form: &Form) -> Vec<String> {
    field(form, "groups")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

const ROLES: &[&str] = &["VIEWER", "CONTRIBUTOR", "APPROVER", "ADMIN"];
const SERVICE_ROLES: &[&str] = &["VIEWER", "CONTRIBUTOR"];

/// One administration form: the mutation it runs, its variables from the form, and the outcome
/// in words from the mutation's answer.
struct Action {
    document: &'static str,
    variables: Result<Value, Error>,
    done: fn(&Value) -> String,
}

/// The action a project form names, with its variables.
fn project_action_for(name: &str, project: &str, form: &Form) -> Option<Action> {
    let action = match name {
        "members" => Action {
            document: "mutation($p: String!, $email: String!, $role: Role!, $groups: [String!]) {
              r: addMember(project: $p, email: $email, role: $role, groups: $groups) { role groups user { email } } }",
            variables: person(project, form),
            done: |r| {
                format!(
                    "{} is now {} of the project{}.",
                    r["user"]["email"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or(""),
                    groups_phrase(&r["groups"])
                )
            },
        },
        "members/remove" => Action {
            document: "mutation($p: String!, $email: String!) { r: removeMember(project: $p, email: $email) }",
            variables: required(form, "email", "an email address")
                .map(|email| json!({"p": project, "email": email})),
            done: |_| "The member was removed.".to_owned(),
        },
        "invitations" => Action {
            document: "mutation($p: String!, $email: String!, $role: Role!, $groups: [String!]) {
              r: inviteMember(project: $p, email: $email, role: $role, groups: $groups) { email role expiresAt } }",
            variables: person(project, form),
            done: |r| {
                format!(
                    "{} is invited as {}; the invitation was mailed and expires {}.",
                    r["email"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or(""),
                    r["expiresAt"].as_str().unwrap_or("")
                )
            },
        },
        "invitations/revoke" => Action {
            document: "mutation($id: ID!) { r: revokeInvitation(id: $id) { email } }",
            variables: required(form, "id", "an invitation").map(|id| json!({"id": id})),
            done: |r| {
                format!(
                    "The invitation of {} was revoked.",
                    r["email"].as_str().unwrap_or("")
                )
            },
        },
        "webhooks" => Action {
            document:
                "mutation($p: String!, $url: String!) { r: addWebhook(project: $p, url: $url) { url secret } }",
            variables: required(form, "url", "a URL").map(|url| json!({"p": project, "url": url})),
            done: |r| {
                format!(
                    "Webhook {} added. Its signing secret is below: store it now, it is not shown again.",
                    r["url"].as_str().unwrap_or("")
                )
            },
        },
        "webhooks/remove" => Action {
            document: "mutation($p: String!, $id: ID!) { r: removeWebhook(project: $p, id: $id) }",
            variables: required(form, "id", "a webhook").map(|id| json!({"p": project, "id": id})),
            done: |_| "The webhook was removed.".to_owned(),
        },
        "service-accounts" => Action {
            document: "mutation($p: String!, $name: String!, $role: Role) {
              r: createServiceAccount(project: $p, name: $name, role: $role) { identity role } }",
            variables: required(form, "name", "a name").and_then(|name| {
                Ok(json!({"p": project, "name": name, "role": role(form, SERVICE_ROLES)?}))
            }),
            done: |r| {
                format!(
                    "Service account {} created as {}. Create a token for it to use it.",
                    r["identity"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or("")
                )
            },
        },
        "service-accounts/token" => Action {
            document: "mutation($p: String!, $account: String!, $name: String!, $exp: String, $ro: Boolean) {
              r: createServiceAccountToken(project: $p, account: $account, name: $name, expiresIn: $exp, readOnly: $ro) {
                secret token { name expiresAt readOnly } } }",
            variables: service_token(project, form),
            done: token_created,
        },
        "service-accounts/remove" => Action {
            document: "mutation($p: String!, $name: String!) { r: removeServiceAccount(project: $p, name: $name) }",
            variables: required(form, "name", "a service account")
                .map(|name| json!({"p": project, "name": name})),
            done: |_| "The service account was removed and its tokens revoked.".to_owned(),
        },
        "tokens/revoke" => revoke_token(form),
        "approval-sign-in" => Action {
            document: "mutation($p: String!, $rule: ApprovalSignIn) {
              r: setApprovalSignIn(project: $p, rule: $rule) { approvalSignIn approvalSignInIsDefault } }",
            variables: match field(form, "rule") {
                None | Some("DEFAULT") => Ok(json!({"p": project, "rule": null})),
                Some(rule @ ("SESSION" | "LINK")) => Ok(json!({"p": project, "rule": rule})),
                Some(other) => Err(Error::invalid(format!("unknown sign-in rule `{other}`"))),
            },
            done: |r| {
                let default = if r["approvalSignInIsDefault"] == json!(true) {
                    " (the server's default)"
                } else {
                    ""
                };
                format!(
                    "Deciding on promotions now needs {}{default}.",
                    match r["approvalSignIn"].as_str() {
                        Some("SESSION") => "a recent browser sign-in of the approver",
                        _ => "the mailed link alone",
                    }
                )
            },
        },
        _ => return None,
    };
    Some(action)
}

/// A member's or invitee's email, role and groups.
fn person(project: &str, form: &Form) -> Result<Value, Error> {
    Ok(
        json!({"p": project, "email": required(form, "email", "an email address")?,
              "role": role(form, ROLES)?, "groups": groups(form)}),
    )
}

fn service_token(project: &str, form: &Form) -> Result<Value, Error> {
    Ok(
        json!({"p": project, "account": required(form, "account", "a service account")?,
              "name": required(form, "name", "a token name")?,
              "exp": field(form, "expires_in"), "ro": field(form, "read_only").is_some()}),
    )
}

fn groups_phrase(groups: &Value) -> String {
    let names: Vec<&str> = groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(", in groups {}", names.join(", "))
    }
}

fn token_created(r: &Value) -> String {
    format!(
        "Token {} created{}, valid until {}. Its secret is below: copy it now, it is not shown again.",
        r["token"]["name"].as_str().unwrap_or(""),
        if r["token"]["readOnly"] == json!(true) {
            " (read-only)"
        } else {
            ""
        },
        r["token"]["expiresAt"].as_str().unwrap_or("")
    )
}

fn revoke_token(form: &Form) -> Action {
    Action {
        document: "mutation($id: ID!) { r: revokeAccessToken(id: $id) { name revokedAt } }",
        variables: required(form, "id", "a token").map(|id| json!({"id": id})),
        done: |r| {
            format!(
                "Token {} was revoked; it is refused from now on.",
                r["name"].as_str().unwrap_or("")
            )
        },
    }
}

/// A form of a project's administration page.
#[post("/projects/{project}/admin/{action:.+}")]
async fn project_action(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> HttpResponse {
    let (project, name) = path.into_inner();
    let back = format!(
        "/projects/{}/admin",
        url::form_urlencoded::byte_serialize(project.as_bytes()).collect::<String>()
    );
    let Some(action) = project_action_for(&name, &project, &form) else {
        return refused(&Error::not_found(format!("no form `{name}` here")));
    };
    run(&state, &schema, &http, &form, action, &back).await
}

/// Checks the session and its CSRF value, runs the action's mutation as the person, and shows
/// its outcome: what was done (and a new secret, once), or the API's refusal.
async fn run(
    state: &AppState,
    schema: &CustodySchema,
    http: &HttpRequest,
    form: &Form,
    action: Action,
    back: &str,
) -> HttpResponse {
    let session = match form_session(state, http, form.get("csrf").map(String::as_str)).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let outcome = match action.variables {
        Ok(variables) => query(schema, state, &session, action.document, variables).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(data) => {
            let r = &data["r"];
            let context = json!({
                "done": true,
                "message": (action.done)(r),
                "secret": r["secret"],
                "back": back,
            });
            page(
                StatusCode::OK,
                "ui/admin_done.html",
                layout(&session, context),
            )
        }
        Err(e) => not_done(&session, &e, back),
    }
}

/// The API's refusal of a form, on a page that leads back to the form. Internal errors keep
/// their generic page (their detail is logged, never shown).
fn not_done(session: &Authenticated, e: &Error, back: &str) -> HttpResponse {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Forbidden(_) | Error::Unauthenticated(_) => StatusCode::FORBIDDEN,
        Error::InvalidInput(_) | Error::TooLarge(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Unavailable(_) | Error::Internal(_) => return refused(e),
    };
    let context = json!({"done": false, "message": e.to_string(), "back": back});
    page(status, "ui/admin_done.html", layout(session, context))
}

const TOKENS: &str = "{
  me { email memberships(first: 200) { project { name } } }
  accessTokens { id name readOnly createdAt expiresAt lastUsedAt revokedAt project { name } }
}";

/// The person's own access tokens, with the forms to create and revoke them.
#[get("/account/tokens")]
async fn tokens(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let request = (TOKENS, json!({}));
    show(&state, &schema, &http, "ui/tokens.html", request, Ok).await
}

/// A form of the tokens page: `create` or `revoke`.
#[post("/account/tokens/{action}")]
async fn token_action(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    name: web::Path<String>,
    form: web::Form<Form>,
) -> HttpResponse {
    let action = match name.as_str() {
        "create" => Action {
            document: "mutation($name: String!, $exp: String, $ro: Boolean, $p: String) {
              r: createAccessToken(name: $name, expiresIn: $exp, readOnly: $ro, project: $p) {
                secret token { name expiresAt readOnly } } }",
            variables: required(&form, "name", "a token name").map(|n| {
                json!({"name": n, "exp": field(&form, "expires_in"),
                       "ro": field(&form, "read_only").is_some(), "p": field(&form, "project")})
            }),
            done: token_created,
        },
        "revoke" => revoke_token(&form),
        other => return refused(&Error::not_found(format!("no form `{other}` here"))),
    };
    run(&state, &schema, &http, &form, action, "/account/tokens").await
}
