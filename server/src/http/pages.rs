//! What the server's own HTML pages share: rendering a template into an uncached page, and the
//! cookies they set.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::templates;

/// Every page's policy: its own styles and scripts only (no inline code, so an injected
/// `<script>` or `style=` does nothing), forms post back here only, and no other site frames it.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A rendered page; never cached (pages carry per-person content and CSRF values).
pub(crate) fn page(status: StatusCode, template: &str, context: serde_json::Value) -> HttpResponse {
    match templates::render(template, &context) {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header(("content-security-policy", CONTENT_SECURITY_POLICY))
            .insert_header(("x-content-type-options", "nosniff"))
            .insert_header(("referrer-policy", "no-referrer"))
            .body(html),
        Err(e) => {
            tracing::error!(error = ?e, "rendering {template}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

/// A refusal page: what went wrong, and that nothing changed.
pub(crate) fn refusal(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    page(
        status,
        "approve_refused.html",
        serde_json::json!({"title": title, "message": message}),
    )
}

/// A cookie only the server reads (`HttpOnly`), `Secure` when the server is reached over https.
pub(crate) fn private_cookie<'a>(
    name: &'a str,
    value: String,
    path: &'a str,
    same_site: SameSite,
    secure: bool,
) -> Cookie<'a> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(same_site)
        .finish()
}

/// A 303 to `location` (after a form, or into and out of the identity provider).
pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("location", location))
        .insert_header(("cache-control", "no-store"))
        .finish()
}

/// `path?name=value`, the value form-encoded.
pub(crate) fn with_query(path: &str, name: &str, value: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    format!("{path}?{query}")
}
