//! Signing in over plain HTTP, as a browser without scripts would: a client that keeps cookies
//! and does not follow redirects (the tests look at each one), the email sign-in form, and the
//! signed-in session's API calls with their CSRF header.

use std::time::Duration;

use serde_json::{json, Value};

use crate::server::Server;
use crate::smtp::{ReceivedMail, SmtpServer};

/// A client with its own cookie jar that does not follow redirects.
pub fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `value` of the hidden input `name` of a page.
pub fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    html.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no hidden `{name}` in the page:\n{html}"))
        .to_owned()
}

/// The sign-in link of a sign-in mail (text part; the HTML part links to the same URL).
pub fn sign_in_link(mail: &ReceivedMail) -> String {
    let text = mail.text();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/sign-in/email/"))
        .unwrap_or_else(|| panic!("no sign-in link in the mail:\n{text}"))
        .to_owned();
    assert!(
        // Tera escapes `/` in HTML.
        mail.html()
            .replace("&#x2F;", "/")
            .contains(&format!("href=\"{link}\"")),
        "the HTML part does not link to {link}"
    );
    link
}

/// The first sign-in mail to `email` after the first `before` mails: another mail (an approval
/// request queued earlier) may arrive while the person signs in.
fn next_sign_in_mail(smtp: &SmtpServer, email: &str, before: usize) -> Option<ReceivedMail> {
    smtp.messages_to(email)
        .into_iter()
        .skip(before)
        .find(|mail| mail.text().contains("/sign-in/email/"))
}

/// Asks for a sign-in link for `email` with `client` (its cookies bind the link), going to
/// `next`; answers the page's text.
pub async fn ask_for_link(client: &reqwest::Client, s: &Server, email: &str, next: &str) -> String {
    let page = client
        .get(s.url("/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_value(&page, "csrf");
    let r = client
        .post(s.url("/sign-in/email"))
        .form(&[("email", email), ("csrf", csrf.as_str()), ("next", next)])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "asking for a link: {body}");
    body
}

/// Signs `email` in by mailed link with a fresh client: returns the signed-in client.
pub async fn sign_in_by_email(s: &Server, smtp: &SmtpServer, email: &str) -> reqwest::Client {
    let client = cookie_client();
    let before = smtp.messages_to(email).len();
    ask_for_link(&client, s, email, "/account").await;
    let mail = crate::wait_until(
        &format!("a sign-in mail to {email}"),
        Duration::from_secs(30),
        || async { next_sign_in_mail(smtp, email, before) },
    )
    .await;
    let r = client.get(sign_in_link(&mail)).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "opening the link: {}",
        r.text().await.unwrap()
    );
    assert_eq!(r.headers()["location"], "/account");
    client
}

/// The CSRF value of the client's session (from its account page).
pub async fn session_csrf(client: &reqwest::Client, s: &Server) -> String {
    let r = client.get(s.url("/account")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the account page of a signed-in client");
    hidden_value(&r.text().await.unwrap(), "csrf")
}

/// A GraphQL request from a signed-in browser session, with `csrf` as its header when given.
pub async fn session_gql(
    client: &reqwest::Client,
    s: &Server,
    csrf: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = client
        .post(s.url("/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Asks for a sign-in link for `email` in a real browser (the sign-in page's form), going to
/// `next`; waits for the "check your mail" page.
pub async fn ask_in_browser(c: &fantoccini::Client, s: &Server, email: &str, next: &str) {
    use fantoccini::Locator;
    c.goto(&s.url(&format!("/sign-in?next={}", urlencode(next))))
        .await
        .unwrap();
    c.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    c.find(Locator::Id("send-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    crate::browser::text_of(c, "sent").await;
}

/// Signs `email` in by mailed link in a real browser (the sign-in page's form, then the link
/// from the mail, in that same browser); the browser ends on `next`.
pub async fn sign_in_in_browser(
    c: &fantoccini::Client,
    s: &Server,
    smtp: &SmtpServer,
    email: &str,
    next: &str,
) {
    let before = smtp.messages_to(email).len();
    ask_in_browser(c, s, email, next).await;
    let mail = crate::wait_until(
        &format!("a sign-in mail to {email}"),
        Duration::from_secs(30),
        || async { next_sign_in_mail(smtp, email, before) },
    )
    .await;
    c.goto(&sign_in_link(&mail)).await.unwrap();
    // The link's page signs in by a form it submits itself: wait for the page it leads to, loaded,
    // so that a test's first key or read reaches that page and not the one being left.
    crate::wait_until(
        &format!("the signed-in browser at {next}"),
        Duration::from_secs(20),
        || async {
            let url = c.current_url().await.ok()?;
            let at = match url.query() {
                Some(query) if next.contains('?') => format!("{}?{query}", url.path()),
                _ => url.path().to_owned(),
            };
            let loaded = c.execute("return document.readyState", vec![]).await.ok()?;
            (at == next && loaded == "complete").then_some(())
        },
    )
    .await;
}

fn urlencode(text: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", text)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("v=")
        .to_owned()
}
