//! Notifications through a transactional outbox: mails and webhook calls are rows written in the
//! transaction of the event that causes them, and a worker on every replica delivers them
//! (claiming rows FOR UPDATE SKIP LOCKED), with retries and exponential backoff.
//!
//! Delivery is at least once: a crash between sending and committing resends. Each mail carries
//! a Message-ID and each webhook an `X-Custody-Delivery` id derived from the outbox row, so
//! receivers can drop duplicates.
//!
//! Webhook calls go only where [`crate::outbound`] allows, and are attempted a bounded number of
//! times: then the row is marked failed (`failed_at`) and the failure logged. Mails are retried
//! until they go out (an SMTP outage must not lose an approval link).

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use hmac::{Hmac, Mac};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::db::schema::{outbox, webhooks};
use crate::db::{text_enum, Conn, DbPool};
use crate::error::{Error, Result};
use crate::ids::{OutboxId, ProjectId, TypedId, WebhookId};
use crate::outbound::WebhookPolicy;
use crate::templates;

/// Queues a mail rendered from `web/templates/email/<template>.{txt,html}`, `about` the row it
/// concerns (a promotion, a model version).
pub async fn enqueue_email(
    conn: &mut Conn,
    to: &str,
    subject: &str,
    template: &str,
    context: &Value,
    about: impl TypedId,
) -> Result<()> {
    let text = templates::render(&format!("email/{template}.txt"), context)?;
    let html = templates::render(&format!("email/{template}.html"), context)?;
    insert(
        conn,
        OutboxKind::Email,
        json!({"to": to, "subject": subject, "text": text, "html": html, "about": about.to_string()}),
    )
    .await
}

/// Queues one call per webhook of the project. The secret stays in `webhooks`; the worker signs.
pub async fn enqueue_webhooks(
    conn: &mut Conn,
    project_id: ProjectId,
    event: &str,
    data: &Value,
) -> Result<()> {
    let hooks: Vec<WebhookId> = webhooks::table
        .filter(webhooks::project_id.eq(project_id))
        .select(webhooks::id)
        .load(conn)
        .await?;
    for hook in hooks {
        let body = json!({"event": event, "at": Utc::now().to_rfc3339(), "data": data});
        insert(
            conn,
            OutboxKind::Webhook,
            json!({"webhook_id": hook, "event": event, "body": body}),
        )
        .await?;
    }
    Ok(())
}

/// Queues an OpenLineage event for the configured endpoint (`openlineage::emit`).
pub async fn enqueue_openlineage(conn: &mut Conn, event: Value) -> Result<()> {
    insert(conn, OutboxKind::OpenLineage, json!({ "event": event })).await
}

text_enum! {
    // What an outbox row delivers (`outbox.kind`).
    enum OutboxKind as "outbox kind" {
        Email = "email",
        Webhook = "webhook",
        OpenLineage = "openlineage",
    }
}

async fn insert(conn: &mut Conn, kind: OutboxKind, payload: Value) -> Result<()> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::id.eq(OutboxId::generate()),
            outbox::kind.eq(kind),
            outbox::payload.eq(payload),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Where mails go.
#[derive(Clone)]
pub enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory (the embedded default).
    Files(PathBuf),
}

impl MailTransport {
    /// SMTP from a URL (`smtp://user:pass@host:587?tls=required`, `smtps://host`), else files.
    pub fn new(smtp_url: Option<&str>, outbox_dir: PathBuf) -> anyhow::Result<Self> {
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("CUSTODY_SMTP_URL is not a valid SMTP URL: {e}"))?
                    .timeout(Some(Duration::from_secs(20)))
                    .build();
                Ok(MailTransport::Smtp(transport))
            }
            None => {
                // The files hold approval links: readable by the server's user only.
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::create_dir_all(&outbox_dir)?;
                std::fs::set_permissions(&outbox_dir, std::fs::Permissions::from_mode(0o700))?;
                Ok(MailTransport::Files(outbox_dir))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MailTransport::Smtp(_) => "SMTP".into(),
            MailTransport::Files(dir) => format!(".eml files in {}", dir.display()),
        }
    }
}

#[derive(Clone)]
pub struct Delivery {
    pub mail: MailTransport,
    pub from: Mailbox,
    pub webhooks: WebhookPolicy,
    /// Where OpenLineage events go (`None`: none are queued).
    pub openlineage: Option<crate::openlineage::emit::Target>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    id: OutboxId,
    kind: OutboxKind,
    payload: Value,
    attempts: i32,
}

/// Delivers due rows until none is left; answers how many were delivered.
pub async fn deliver_due(pool: &DbPool, delivery: &Delivery) -> Result<usize> {
    let mut delivered = 0;
    loop {
        let mut pooled = pool.get().await?;
        let conn: &mut Conn = &mut pooled;
        let outcome = crate::audit::transaction(conn, |conn| {
                async move {
                    let row: Option<OutboxRow> = outbox::table
                        .filter(outbox::delivered_at.is_null())
                        .filter(outbox::failed_at.is_null())
                        .filter(outbox::available_at.le(Utc::now()))
                        // Rows of one transaction share `available_at` (now() is the transaction's
                        // start): the UUIDv7 id keeps their order (e.g. approved before applied).
                        .order((outbox::available_at, outbox::id))
                        .select(OutboxRow::as_select())
                        .for_update()
                        .skip_locked()
                        .first(conn)
                        .await
                        .optional()?;
                    let Some(row) = row else { return Ok(None) };
                    let result = send(conn, delivery, &row).await;
                    match &result {
                        Ok(()) => {
                            diesel::update(outbox::table.find(row.id))
                                .set((outbox::delivered_at.eq(Utc::now()), outbox::attempts.eq(row.attempts + 1)))
                                .execute(conn)
                                .await?;
                        }
                        Err(e) => {
                            let attempts = row.attempts + 1;
                            let error = format!("{e:#}");
                            // Mails are retried until they go out; calls to other services give up.
                            let gave_up = row.kind != OutboxKind::Email
                                && attempts >= delivery.webhooks.max_attempts;
                            if gave_up {
                                tracing::error!(outbox.id = %row.id, outbox.kind = %row.kind, attempts, error = %error, "delivery failed for good; the call is marked failed");
                            } else {
                                tracing::warn!(outbox.id = %row.id, outbox.kind = %row.kind, attempts, error = %error, "delivery failed; will retry");
                            }
                            diesel::update(outbox::table.find(row.id))
                                .set((
                                    outbox::attempts.eq(attempts),
                                    outbox::last_error.eq(&error),
                                    outbox::available_at.eq(Utc::now() + backoff(attempts)),
                                    outbox::failed_at.eq(gave_up.then(Utc::now)),
                                ))
                                .execute(conn)
                                .await?;
                        }
                    }
                    Ok::<_, Error>(Some(result.is_ok()))
                }
                .scope_boxed()
            })
            .await?;
        match outcome {
            None => return Ok(delivered),
            Some(true) => delivered += 1,
            Some(false) => {}
        }
    }
}

/// 2 s, 4 s, 8 s, … capped at 10 minutes.
fn backoff(attempts: i32) -> chrono::Duration {
    let secs = 2i64.saturating_pow(attempts.clamp(1, 20) as u32).min(600);
    chrono::Duration::seconds(secs)
}

async fn send(conn: &mut Conn, delivery: &Delivery, row: &OutboxRow) -> anyhow::Result<()> {
    match row.kind {
        OutboxKind::Email => send_mail(delivery, row).await,
        OutboxKind::OpenLineage => {
            let Some(target) = &delivery.openlineage else {
                tracing::warn!(outbox.id = %row.id, "OpenLineage emission is no longer configured; dropping the event");
                return Ok(());
            };
            let mut request = reqwest::Client::new()
                .post(target.url.clone())
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&row.payload["event"])?);
            if let Some(key) = &target.api_key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.map_err(reqwest::Error::without_url)?;
            anyhow::ensure!(
                response.status().is_success(),
                "the OpenLineage endpoint answered {}",
                response.status()
            );
            Ok(())
        }
        OutboxKind::Webhook => {
            let hook: WebhookId = serde_json::from_value(row.payload["webhook_id"].clone())?;
            let found: Option<(String, String)> = webhooks::table
                .find(hook)
                .select((webhooks::url, webhooks::secret))
                .first(conn)
                .await
                .optional()?;
            let Some((url, secret)) = found else {
                tracing::warn!(outbox.id = %row.id, "webhook no longer exists; dropping the call");
                return Ok(());
            };
            let body = serde_json::to_vec(&row.payload["body"])?;
            let event = row.payload["event"].as_str().unwrap_or_default().to_owned();
            let url = url::Url::parse(&url)?;
            let client = delivery.webhooks.client_for(&url).await?;
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-custody-event", event)
                .header("x-custody-delivery", row.id.to_string())
                .header(
                    "x-custody-signature",
                    format!("sha256={}", sign(&secret, &body)),
                )
                .body(body)
                .send()
                .await
                // Webhook URLs often carry a secret in their path (chat services): keep it out
                // of `last_error` and the log.
                .map_err(reqwest::Error::without_url)?;
            anyhow::ensure!(
                response.status().is_success(),
                "the webhook answered {}",
                response.status()
            );
            Ok(())
        }
    }
}

/// HMAC-SHA256 of the body with the webhook's secret, hex: what `X-Custody-Signature` carries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn send_mail(delivery: &Delivery, row: &OutboxRow) -> anyhow::Result<()> {
    let field = |name: &str| row.payload[name].as_str().unwrap_or_default().to_owned();
    let message = Message::builder()
        .from(delivery.from.clone())
        .to(field("to").parse()?)
        .subject(field("subject"))
        .message_id(Some(format!("<{}@custody>", row.id)))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(field("text")),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(field("html")),
                ),
        )?;
    match &delivery.mail {
        MailTransport::Smtp(smtp) => {
            smtp.send(message).await?;
        }
        MailTransport::Files(dir) => write_eml(dir, row.id, &message.formatted()).await?,
    }
    Ok(())
}

/// Writes a mail as `<dir>/<outbox id>.eml`, mode 0600 (it holds an approval link: no other
/// local user may read it). Written under a temporary name first, so that a reader never sees
/// half a mail, and replaced whole when a retry writes it again.
async fn write_eml(dir: &std::path::Path, id: OutboxId, content: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(format!("{id}.eml"));
    let partial = dir.join(format!(".{id}.eml.partial"));
    let content = content.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        crate::auth::write_private_file(&partial, &content)?;
        std::fs::rename(&partial, &path)?;
        Ok(())
    })
    .await?
}

/// Runs the outbox worker every `every` on this replica.
pub fn spawn_worker(pool: DbPool, delivery: Delivery, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&pool, &delivery).await {
                tracing::error!(error = ?e, "outbox delivery failed");
            }
        }
    });
}

/// Registers a webhook for a project's promotion events (project admins); answers its secret.
pub async fn add_webhook(
    conn: &mut Conn,
    actor: &crate::actor::Actor,
    policy: &WebhookPolicy,
    project_name: &str,
    url: &str,
) -> Result<(WebhookId, String)> {
    let project =
        crate::projects::find_authorized(conn, actor, project_name, crate::projects::Role::Admin)
            .await?;
    policy.check_url(url)?;
    let id = WebhookId::generate();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    diesel::insert_into(webhooks::table)
        .values((
            webhooks::id.eq(id),
            webhooks::project_id.eq(project.id),
            webhooks::url.eq(url),
            webhooks::secret.eq(&secret),
        ))
        .execute(conn)
        .await?;
    crate::audit::record(
        conn,
        actor,
        crate::audit::Change {
            action: "webhook.add",
            project_id: Some(project.id),
            subject_kind: "webhook",
            subject_id: id.to_string(),
            before: None,
            after: Some(json!({"url": url})),
        },
    )
    .await?;
    Ok((id, secret))
}

/// A project's registered webhook as admins see it (the secret was shown once, at registration).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    pub id: WebhookId,
    pub project_id: ProjectId,
    pub url: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The webhooks of a project, oldest first (project admins; FORBIDDEN for other members,
/// NOT_FOUND for anyone else).
pub async fn webhooks_of(
    conn: &mut Conn,
    actor: &crate::actor::Actor,
    project_id: ProjectId,
) -> Result<Vec<WebhookRow>> {
    crate::projects::authorize(conn, actor, project_id, crate::projects::Role::Admin).await?;
    Ok(webhooks::table
        .filter(webhooks::project_id.eq(project_id))
        .order((webhooks::created_at, webhooks::id))
        .select(WebhookRow::as_select())
        .load(conn)
        .await?)
}

/// Removes a project's webhook (project admins). Calls already queued for it are dropped by the
/// delivery worker, which finds the webhook gone.
pub async fn remove_webhook(
    conn: &mut Conn,
    actor: &crate::actor::Actor,
    project_name: &str,
    id: WebhookId,
) -> Result<()> {
    let project =
        crate::projects::find_authorized(conn, actor, project_name, crate::projects::Role::Admin)
            .await?;
    let url: String = diesel::delete(
        webhooks::table
            .filter(webhooks::id.eq(id))
            .filter(webhooks::project_id.eq(project.id)),
    )
    .returning(webhooks::url)
    .get_result(conn)
    .await
    .optional()?
    .ok_or_else(|| Error::not_found(format!("no webhook {id} in {project_name}")))?;
    crate::audit::record(
        conn,
        actor,
        crate::audit::Change {
            action: "webhook.remove",
            project_id: Some(project.id),
            subject_kind: "webhook",
            subject_id: id.to_string(),
            before: Some(json!({"url": url})),
            after: None,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1).num_seconds(), 2);
        assert_eq!(backoff(3).num_seconds(), 8);
        assert_eq!(backoff(30).num_seconds(), 600);
    }
}
