//! `POST /graphql`: the body is read here, under a limit, after the caller is known.
//!
//! The caller is authenticated from the header first. A caller with a valid token may send up
//! to `CUSTODY_GRAPHQL_MAX_BODY`; anyone else at most [`ANONYMOUS_MAX_BODY`], which is plenty
//! for the errors they will get and for introspection. A `Content-Length` over the limit is
//! answered 413 at once, without reading; a chunked body is read with a running count and
//! refused as soon as it passes the limit. So no body is ever buffered beyond its limit.

use std::panic::AssertUnwindSafe;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use async_graphql::http::GraphiQLSource;
use futures_util::FutureExt as _;
use tracing_actix_web::RequestId;

use crate::access::Access;
use crate::error::Error;
use crate::graphql::{add_missing_codes, loader, Caller, CustodySchema};
use crate::state::AppState;

/// Largest body accepted from a caller without a valid token.
pub const ANONYMOUS_MAX_BODY: usize = 64 << 10;

/// The body limit of authenticated callers (`CUSTODY_GRAPHQL_MAX_BODY`).
#[derive(Clone, Copy)]
pub struct GraphqlLimits {
    pub max_body: usize,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(graphql).service(graphiql);
}

#[post("/graphql")]
async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    limits: web::Data<GraphqlLimits>,
    http: HttpRequest,
    request_id: RequestId,
    payload: web::Payload,
) -> HttpResponse {
    let caller = Caller(super::authenticate(&state, &http, request_id.to_string()).await);
    if let Err(Error::Unavailable(message)) = &caller.0 {
        // No connection to check the token with: "busy, retry", not "unauthenticated".
        return error_response(StatusCode::SERVICE_UNAVAILABLE, message, false);
    }
    let limit = match &caller.0 {
        Ok(_) => limits.max_body,
        Err(_) => ANONYMOUS_MAX_BODY,
    };
    let body = match super::read_body(&http, payload, limit).await {
        Ok(body) => body,
        Err(super::BodyRefusal::TooLarge) => {
            let message = match &caller.0 {
                Ok(_) => format!("the request body is larger than {limit} bytes"),
                Err(_) => {
                    format!("requests without a valid bearer token may carry at most {limit} bytes")
                }
            };
            // What follows is discarded unread (never buffered); the connection then closes.
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, &message, true);
        }
        Err(super::BodyRefusal::Broken(why)) => {
            return error_response(StatusCode::BAD_REQUEST, &why, true)
        }
    };
    let mut request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a GraphQL request (JSON with a `query`): {e}"),
                false,
            )
        }
    };
    drop(body);
    if carries_nul(&mut request) {
        // PostgreSQL cannot store U+0000 in text: refused here, for every argument at once,
        // rather than failing deep inside a query.
        return error_response(
            StatusCode::BAD_REQUEST,
            "strings may not contain the NUL character (U+0000)",
            false,
        );
    }
    let mut request = request.data(loader(state.pool.clone()));
    if let Ok(actor) = &caller.0 {
        request = request.data(Access::new(actor.clone(), state.pool.clone()));
    }
    let request = request.data(caller);
    // A panic in a resolver is a bug, but it must cost one answer, not the connection (or the
    // worker): it becomes an INTERNAL error. The panic message is still logged (the hook runs
    // first), so tests and operators see it.
    let mut response = match AssertUnwindSafe(schema.execute(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!("a GraphQL resolver panicked; answering INTERNAL");
            let mut error = async_graphql::ServerError::new("internal error", None);
            let mut extensions = async_graphql::ErrorExtensionValues::default();
            extensions.set("code", "INTERNAL");
            error.extensions = Some(extensions);
            async_graphql::Response::from_errors(vec![error])
        }
    };
    add_missing_codes(&mut response);
    let mut answer = HttpResponse::Ok();
    answer.content_type("application/json");
    for (name, value) in response.http_headers.iter() {
        // async-graphql speaks http 1's types, actix-web http 0.2's: carried over as bytes.
        let name = actix_web::http::header::HeaderName::from_bytes(name.as_str().as_bytes());
        let value = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes());
        if let (Ok(name), Ok(value)) = (name, value) {
            answer.append_header((name, value));
        }
    }
    match serde_json::to_vec(&response) {
        Ok(json) => answer.body(json),
        Err(e) => {
            tracing::error!(error = %e, "serialising a GraphQL response");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error", false)
        }
    }
}

/// A GraphQL-shaped error answer (`{"errors": [{"message", "extensions": {"code"}}]}`) for
/// requests refused before execution; `close` ends the connection after it.
fn error_response(status: StatusCode, message: &str, close: bool) -> HttpResponse {
    let code = match status {
        StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INVALID_INPUT",
    };
    let mut builder = HttpResponse::build(status);
    if close {
        builder.force_close();
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header((actix_web::http::header::RETRY_AFTER, "5"));
    }
    builder.content_type("application/json").body(
        serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]})
            .to_string(),
    )
}

/// Whether any string of the request, in its variables or in the literals of its document,
/// contains U+0000. A document that does not parse is left to the executor's error.
fn carries_nul(request: &mut async_graphql::Request) -> bool {
    use async_graphql::parser::types::{Directive, Selection, SelectionSet};
    use async_graphql::{Positioned, Value};

    fn value(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::List(items) => items.iter().any(value),
            Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || value(v)),
            _ => false,
        }
    }
    /// A literal of the document (variables inside it count as null: checked on their own).
    fn literal<T: serde::Serialize>(v: &T) -> bool {
        serde_json::to_value(v).is_ok_and(|json| json_value(&json))
    }
    fn json_value(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(json_value),
            serde_json::Value::Object(fields) => fields
                .iter()
                .any(|(k, v)| k.contains('\0') || json_value(v)),
            _ => false,
        }
    }
    fn directives(ds: &[Positioned<Directive>]) -> bool {
        ds.iter()
            .any(|d| d.node.arguments.iter().any(|(_, v)| literal(&v.node)))
    }
    fn selections(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(f) => {
                f.node.arguments.iter().any(|(_, v)| literal(&v.node))
                    || directives(&f.node.directives)
                    || selections(&f.node.selection_set.node)
            }
            Selection::FragmentSpread(s) => directives(&s.node.directives),
            Selection::InlineFragment(i) => {
                directives(&i.node.directives) || selections(&i.node.selection_set.node)
            }
        })
    }

    if request.variables.iter().any(|(_, v)| value(v)) {
        return true;
    }
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    document.operations.iter().any(|(_, op)| {
        directives(&op.node.directives)
            || op.node.variable_definitions.iter().any(|d| {
                d.node
                    .default_value
                    .as_ref()
                    .is_some_and(|v| value(&v.node))
            })
            || selections(&op.node.selection_set.node)
    }) || document
        .fragments
        .values()
        .any(|f| directives(&f.node.directives) || selections(&f.node.selection_set.node))
}

#[get("/graphql")]
async fn graphiql() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .title("Custody GraphiQL")
                .finish(),
        )
}

#[cfg(test)]
mod tests {
    use super::carries_nul;

    fn request(query: &str, variables: serde_json::Value) -> async_graphql::Request {
        async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(variables))
    }

    #[test]
    fn nul_is_found_wherever_a_string_is() {
        let clean = r#"query($a: String) { project(name: "p") { name } }"#;
        assert!(!carries_nul(&mut request(
            clean,
            serde_json::json!({"a": "ok"})
        )));
        assert!(carries_nul(&mut request(
            clean,
            serde_json::json!({"a": {"deep": ["x", "a\u{0}b"]}})
        )));
        for query in [
            r#"{ project(name: "a\u0000") { name } }"#,
            r#"{ lineage(node: {kind: RUN, id: "\u0000"}, direction: UPSTREAM) { nodes { id } } }"#,
            r#"{ project(name: "p") @include(if: true) { name @skip(if: false) } me { email } }"#,
            r#"query($x: String = "\u0000") { me { email } }"#,
            r#"{ ...F } fragment F on Query { project(name: "\u0000") { name } }"#,
        ] {
            let found = carries_nul(&mut request(query, serde_json::json!({})));
            assert_eq!(found, query.contains("\\u0000"), "{query}");
        }
        // A document that does not parse is left to the executor.
        assert!(!carries_nul(&mut request(
            "{ project(",
            serde_json::json!({})
        )));
    }
}
