//! The request span of every log line, with the secrets of URLs masked.
//!
//! Some URLs carry their own authorization: mailed approval links (`/approve/{token}`), direct
//! download links (`/api/artifacts/download/{token}`) and direct upload parts (`?token=`). Logs
//! travel further than the server (files, collectors, support tickets), so the span records the
//! request target with such tokens replaced by `***`: known routes, any path segment shaped like
//! a JWT, and every query parameter whose name speaks of a token, signature, key or password.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage as _;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

const MASK: &str = "***";

/// Routes whose last segment is a secret.
const SECRET_SEGMENT_ROUTES: &[&str] = &["/approve/", "/api/artifacts/download/"];

pub struct MaskedRootSpan;

impl RootSpanBuilder for MaskedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let client_ip = request
            .connection_info()
            .realip_remote_addr()
            .unwrap_or("")
            .to_owned();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.target = %mask_target(request.uri()),
            http.client_ip = %client_ip,
            http.user_agent = %user_agent,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span.clone(), outcome);
        // An access line per request, at debug level (`RUST_LOG=custody_server=debug`).
        tracing::debug!(parent: &span, "request done");
    }
}

/// The path and query of `uri` with every secret replaced by `***`.
pub fn mask_target(uri: &actix_web::http::Uri) -> String {
    let path = uri.path();
    let mut masked = match SECRET_SEGMENT_ROUTES
        .iter()
        .find(|prefix| path.starts_with(*prefix) && path.len() > prefix.len())
    {
        Some(prefix) => format!("{prefix}{MASK}"),
        None => path
            .split('/')
            .map(|segment| {
                if looks_like_jwt(segment) {
                    MASK
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
    };
    if let Some(query) = uri.query() {
        masked.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if secret_parameter(name) || looks_like_jwt(value) => {
                    format!("{name}={MASK}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        masked.push_str(&pairs.join("&"));
    }
    masked
}

fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "signature",
        "sig",
        "secret",
        "key",
        "password",
        "credential",
        "auth",
        "code",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Three base64url parts joined by dots, long enough to be a signed token.
fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    text.len() >= 32
        && parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'%' | b'='))
        })
}

#[cfg(test)]
mod tests {
    use super::mask_target;

    fn masked(target: &str) -> String {
        mask_target(&target.parse().unwrap())
    }

    #[test]
    fn secrets_in_targets_are_masked() {
        assert_eq!(masked("/approve/abc.def.ghi"), "/approve/***");
        assert_eq!(
            masked("/api/artifacts/download/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"),
            "/api/artifacts/download/***"
        );
        assert_eq!(
            masked("/api/uploads/0190/parts/1?token=eyJ.x.y&x=1"),
            "/api/uploads/0190/parts/1?token=***&x=1"
        );
        assert_eq!(
            masked("/anything/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl/x"),
            "/anything/***/x"
        );
        assert_eq!(
            masked("/api/audit/export?from=2026-01-01&X-Amz-Signature=abc&format=csv"),
            "/api/audit/export?from=2026-01-01&X-Amz-Signature=***&format=csv"
        );
        assert_eq!(masked("/healthz"), "/healthz");
        assert_eq!(
            masked("/api/artifacts/run/0190/model/model.bin"),
            "/api/artifacts/run/0190/model/model.bin"
        );
    }
}
