//! `custody login` without a token: the OAuth device flow (RFC 8628) against the server. The
//! command shows a URL and a short code, the person approves it in a signed-in browser, and the
//! server answers a short-lived access token and a refresh token, which renews it (and is
//! itself replaced) when it runs out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::ui::CliError;

/// What a login holds.
pub struct Tokens {
    pub token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct DeviceStart {
    device_code: String,
    user_code: String,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> CliError {
    CliError::other(format!("cannot reach {url}: {e}"))
}

async fn token_request(url: &str, form: &[(&str, &str)]) -> Result<TokenAnswer, CliError> {
    let endpoint = format!("{url}/api/device/token");
    let r = http()
        .post(&endpoint)
        .form(form)
        .send()
        .await
        .map_err(|e| unreachable(url, e))?;
    r.json().await.map_err(|e| {
        CliError::other(format!(
            "{endpoint} answered something else than tokens: {e}"
        ))
    })
}

fn granted(answer: TokenAnswer) -> Option<Tokens> {
    Some(Tokens {
        token: answer.access_token?,
        refresh_token: answer.refresh_token?,
        expires_at: Utc::now() + chrono::Duration::seconds(answer.expires_in.unwrap_or(3600)),
    })
}

/// Runs the device flow; `tell` shows the person where to approve (the terminal, on stderr).
pub async fn login(url: &str, tell: impl Fn(&str, &str)) -> Result<Tokens, CliError> {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this computer".into());
    let client_name = format!("custody on {host}");
    let r = http()
        .post(format!("{url}/api/device/code"))
        .form(&[("client_name", client_name.as_str())])
        .send()
        .await
        .map_err(|e| unreachable(url, e))?;
    if !r.status().is_success() {
        return Err(CliError::other(format!(
            "{url} refused to start a login ({}): is it a Custody server?",
            r.status()
        )));
    }
    let start: DeviceStart = r
        .json()
        .await
        .map_err(|e| CliError::other(format!("{url} answered something else than a login: {e}")))?;
    tell(&start.verification_uri_complete, &start.user_code);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(start.expires_in);
    let mut interval = Duration::from_secs(start.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            return Err(
                CliError::unauthenticated("the code expired before it was approved")
                    .hint("run `custody login` again"),
            );
        }
        let answer = token_request(
            url,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &start.device_code),
            ],
        )
        .await?;
        match answer.error.as_deref() {
            None => {
                return granted(answer)
                    .ok_or_else(|| CliError::other("the server's answer carries no tokens"))
            }
            Some("authorization_pending") => {}
            // RFC 8628 §3.5: every slow_down adds five seconds.
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => {
                return Err(CliError::unauthenticated(
                    "the login was denied in the browser",
                ))
            }
            Some(other) => {
                return Err(CliError::unauthenticated(format!(
                    "the login failed: {other} {}",
                    answer.error_description.unwrap_or_default()
                ))
                .hint("run `custody login` again"))
            }
        }
    }
}

/// Renews a login's tokens (the refresh token is used up and replaced).
pub async fn refresh(url: &str, refresh_token: &str) -> Result<Tokens, CliError> {
    let answer = token_request(
        url,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await?;
    if let Some(error) = &answer.error {
        return Err(CliError::unauthenticated(format!(
            "the stored login cannot be renewed: {error} {}",
            answer.error_description.as_deref().unwrap_or("")
        ))
        .hint(format!("run `custody login --url {url}` again")));
    }
    granted(answer).ok_or_else(|| CliError::other("the server's answer carries no tokens"))
}
