//! Command line and environment: every setting can come from a flag or its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// `--version`: a debug build says so, so that benchmarks can tell what they measure.
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser, Debug)]
#[command(
    name = "custody-server",
    version = VERSION,
    about = "Custody: model registry and MLOps governance server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start: the size of the `serve` options does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server.
    Serve(ServeOptions),
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseOptions,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Promotion policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log: verify an export offline, print the public key, archive old entries.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

// Each command takes the settings it uses, no more: `audit verify --help` does not offer a
// database, and `schema` takes nothing.

/// The data directory.
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// Where the server keeps its state (private PostgreSQL cluster, keys, admin token).
    #[arg(
        long = "data-dir",
        id = "data_dir",
        value_name = "DATA_DIR",
        env = "CUSTODY_DATA_DIR",
        default_value = "./custody-data"
    )]
    pub path: PathBuf,
}

/// The database of commands that open one.
#[derive(Args, Debug, Clone)]
pub struct DatabaseOptions {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// PostgreSQL to use; unset runs a private cluster in <data-dir>/pg.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL role that owns the schema and applies migrations, when DATABASE_URL names a
    /// less privileged runtime role (SECURITY.md lists its grants); unset: DATABASE_URL does both.
    #[arg(long, env = "CUSTODY_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<String>,
}

/// The secret of API tokens.
#[derive(Args, Debug, Clone)]
pub struct TokenSecretOption {
    /// Secret that signs API tokens (at least 32 characters); unset uses <data-dir>/jwt.key.
    /// Replicas sharing one database must share it.
    #[arg(long, env = "CUSTODY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// The audit signing key.
#[derive(Args, Debug, Clone)]
pub struct AuditKeyOption {
    /// Ed25519 private key (PKCS#8, PEM or DER) that signs audit exports: a file path, or the
    /// PEM text. Unset: <data-dir>/audit-signing.pk8, generated on first use. Replicas sharing
    /// one database must share it.
    #[arg(long, env = "CUSTODY_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<String>,
}

impl AuditKeyOption {
    pub fn load(&self, data_dir: &std::path::Path) -> anyhow::Result<crate::audit::AuditKeys> {
        crate::audit::AuditKeys::load(self.audit_signing_key.as_deref(), data_dir)
    }
}

/// Where `audit verify` finds the server's public key without `--public-key`: on the server's
/// machine, in its signing key. Nothing is created.
#[derive(Args, Debug, Clone)]
pub struct LocalPublicKey {
    /// The server's data directory: its audit-signing.pk8 verifies.
    #[arg(
        long,
        value_name = "DATA_DIR",
        env = "CUSTODY_DATA_DIR",
        default_value = "./custody-data"
    )]
    pub data_dir: PathBuf,
    /// The server's configured signing key (a file path, or the PEM text): its public half
    /// verifies.
    #[arg(long, env = "CUSTODY_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<String>,
}

/// The audit key and checkpoints of a running server.
#[derive(Args, Debug, Clone)]
pub struct AuditOptions {
    #[command(flatten)]
    pub key: AuditKeyOption,
    /// How often the server signs a checkpoint of the audit chain head (when it moved).
    #[arg(long, env = "CUSTODY_AUDIT_CHECKPOINT_INTERVAL", default_value = "1h",
          value_parser = parse_duration)]
    pub audit_checkpoint_interval: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit export (JSON Lines or CSV) or a signed compliance report, offline: no
    /// database, no server. Exit 0 when intact; 1 naming the first bad entry otherwise.
    Verify {
        /// The export or report file.
        file: PathBuf,
        /// The server's public key (PEM or JWK, from GET /api/audit/public-key or
        /// `custody-server audit public-key`). Default: the key of the local data directory.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Checkpoints to hold the export against (GET /api/audit/checkpoints, or earlier
        /// exports' manifest lines): a log that lost its tail or was rewritten contradicts them.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        #[command(flatten, next_help_heading = "Without --public-key")]
        local: LocalPublicKey,
    },
    /// Print the public key that verifies this server's audit exports.
    PublicKey {
        /// `pem` (SubjectPublicKeyInfo) or `jwk`.
        #[arg(long, default_value = "pem", value_parser = ["pem", "jwk"])]
        format: String,
        #[command(flatten)]
        data_dir: DataDir,
        #[command(flatten)]
        key: AuditKeyOption,
    },
    /// Write a verified export of every entry older than DATE to the artifact store. Never
    /// deletes audit entries.
    Archive {
        /// RFC 3339 time or date (UTC midnight): entries strictly before it are archived.
        #[arg(long)]
        before: String,
        #[command(flatten)]
        database: DatabaseOptions,
        #[command(flatten)]
        key: AuditKeyOption,
        #[command(flatten)]
        artifacts: ArtifactOptions,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Run the Rego tests (`test_*` rules of `*_test.rego`) of a policy directory (default: the
    /// built-in bundle).
    Test { dir: Option<PathBuf> },
}

#[derive(Args, Debug, Clone)]
pub struct ServeOptions {
    #[command(flatten)]
    pub database: DatabaseOptions,
    #[command(flatten)]
    pub token_secret: TokenSecretOption,
    #[command(flatten)]
    pub audit: AuditOptions,
    /// Address to listen on.
    #[arg(long, env = "CUSTODY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Browser origins (dashboards) allowed to call the API, comma-separated.
    #[arg(long, env = "CUSTODY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Database connections of the HTTP workers, shared out evenly among them (each worker keeps
    /// its own share; background tasks keep one share more).
    #[arg(long, env = "CUSTODY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// How long a request waits for a free database connection before it is refused (503).
    #[arg(long, env = "CUSTODY_DB_POOL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub db_pool_timeout: std::time::Duration,
    /// Largest GraphQL request body of an authenticated caller (413 beyond); callers without a
    /// valid token may send at most 64 KiB.
    #[arg(long, env = "CUSTODY_GRAPHQL_MAX_BODY", default_value = "4MiB", value_parser = parse_size)]
    pub graphql_max_body: u64,
    /// Bearer token that may scrape /metrics besides server admins' API tokens; unset: admins only.
    #[arg(long, env = "CUSTODY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    #[command(flatten)]
    pub exports: ExportLimitOptions,
    #[command(flatten)]
    pub webhooks: WebhookOptions,
    #[command(flatten)]
    pub sign_in: SignInOptions,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "CUSTODY_WORKERS")]
    pub workers: Option<usize>,
    /// Base URL of this server in links it hands out (mails, direct-upload URLs).
    #[arg(long, env = "CUSTODY_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub artifacts: ArtifactOptions,
    /// Directory of Rego promotion policies replacing the built-in bundle from policies/.
    #[arg(long, env = "CUSTODY_POLICIES")]
    pub policies: Option<PathBuf>,
    /// OpenLineage namespaces and the projects their jobs and datasets go to, as PREFIX=PROJECT
    /// (comma-separated; the longest matching prefix wins), e.g.
    /// `postgres://warehouse=data-platform,airflow=pipelines`.
    #[arg(
        long = "openlineage-namespace",
        env = "CUSTODY_OPENLINEAGE_NAMESPACES",
        value_delimiter = ','
    )]
    pub openlineage_namespaces: Vec<crate::openlineage::NamespaceRule>,
    /// Where to send Custody's own runs, dataset versions and model versions as OpenLineage
    /// events (e.g. a Marquez instance's `http://marquez:5000/api/v1/lineage`); unset sends none.
    #[arg(long, env = "CUSTODY_OPENLINEAGE_EMIT_URL")]
    pub openlineage_emit_url: Option<url::Url>,
    /// Bearer token (API key) for that endpoint.
    #[arg(long, env = "CUSTODY_OPENLINEAGE_EMIT_API_KEY", hide_env_values = true)]
    pub openlineage_emit_api_key: Option<String>,
    /// SMTP server for approval mails (smtp://user:pass@host:587?tls=required, smtps://host);
    /// unset writes .eml files to <data-dir>/outbox/.
    #[arg(long, env = "CUSTODY_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of the mails.
    #[arg(
        long,
        env = "CUSTODY_MAIL_FROM",
        default_value = "Custody <custody@localhost>"
    )]
    pub mail_from: String,
    /// How often each replica delivers the outbox and expires overdue promotions.
    #[arg(long, env = "CUSTODY_OUTBOX_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub outbox_interval: std::time::Duration,
}

/// Audit exports stream for as long as the client reads, each holding a database connection:
/// they get their own small pool, and limits, so they never starve ordinary requests.
#[derive(Args, Debug, Clone)]
pub struct ExportLimitOptions {
    /// Audit exports running at once on this server (each holds one connection of a pool of
    /// its own); more are refused with 503.
    #[arg(long, env = "CUSTODY_EXPORT_POOL_SIZE", default_value_t = 4)]
    pub export_pool_size: usize,
    /// Audit exports one user may run at once; more are refused with 429.
    #[arg(long, env = "CUSTODY_EXPORTS_PER_USER", default_value_t = 2)]
    pub exports_per_user: usize,
    /// An export whose client reads nothing for this long is cut off, freeing its connection.
    #[arg(long, env = "CUSTODY_EXPORT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub export_idle_timeout: std::time::Duration,
}

/// How people sign in from a browser, and what a decision on a promotion demands of them.
#[derive(Args, Debug, Clone)]
pub struct SignInOptions {
    /// OpenID Connect issuer (e.g. https://keycloak.example/realms/corp); enables single sign-on.
    #[arg(long, env = "CUSTODY_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The client id registered for Custody at the provider.
    #[arg(long, env = "CUSTODY_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// The client's secret at the provider.
    #[arg(long, env = "CUSTODY_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Scopes asked of the provider (space-separated; `openid` is always asked).
    #[arg(
        long,
        env = "CUSTODY_OIDC_SCOPES",
        default_value = "openid email profile"
    )]
    pub oidc_scopes: String,
    /// The ID-token claim that lists a person's groups (strings); they count as the person's
    /// groups in every project for `approver_group`.
    #[arg(long, env = "CUSTODY_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Label of the single sign-on button.
    #[arg(long, env = "CUSTODY_OIDC_LABEL", default_value = "single sign-on")]
    pub oidc_label: String,
    /// Email domains (comma-separated) whose people become users by signing in; unset: anyone
    /// the identity provider vouches for (with OIDC), nobody new (with email sign-in alone).
    #[arg(long, env = "CUSTODY_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub allowed_domains: Vec<String>,
    /// Sign-in by mailed single-use link: `auto` (on unless OIDC is configured), `on`, `off`.
    #[arg(long, env = "CUSTODY_EMAIL_SIGN_IN", default_value = "auto",
          value_parser = ["auto", "on", "off"])]
    pub email_sign_in: String,
    /// A browser session ends after this long without a request.
    #[arg(long, env = "CUSTODY_SESSION_IDLE_TIMEOUT", default_value = "8h", value_parser = parse_duration)]
    pub session_idle_timeout: std::time::Duration,
    /// A browser session ends this long after its sign-in, however active.
    #[arg(long, env = "CUSTODY_SESSION_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub session_max_age: std::time::Duration,
    /// What deciding on a promotion needs by default (projects may choose): `link` (the mailed
    /// link alone), `session` (a signed-in session of the approver), `auto` (`session` when OIDC
    /// is configured).
    #[arg(long, env = "CUSTODY_APPROVAL_SIGN_IN", default_value = "auto",
          value_parser = ["auto", "link", "session"])]
    pub approval_sign_in: String,
    /// Where a decision needs a session, its sign-in must be at most this old (step-up).
    #[arg(long, env = "CUSTODY_APPROVAL_RECENT_SIGN_IN", default_value = "15m", value_parser = parse_duration)]
    pub approval_recent_sign_in: std::time::Duration,
}

impl SignInOptions {
    /// The sign-in settings, checked: OIDC needs its issuer, client id and secret together.
    pub fn build(&self, public_url: &str) -> anyhow::Result<crate::sign_in::SignIn> {
        use crate::promotions::{ApprovalRules, ApprovalSignIn};
        use crate::sign_in::oidc::{OidcSettings, Provider};
        let oidc = match (&self.oidc_issuer, &self.oidc_client_id, &self.oidc_client_secret) {
            (None, None, None) => None,
            (Some(issuer), Some(client_id), Some(client_secret)) => {
                url::Url::parse(issuer)
                    .with_context(|| format!("CUSTODY_OIDC_ISSUER `{issuer}` is not a URL"))?;
                let mut scopes = vec!["openid".to_owned()];
                scopes.extend(
                    self.oidc_scopes
                        .split_whitespace()
                        .filter(|s| *s != "openid")
                        .map(str::to_owned),
                );
                Some(Provider::new(OidcSettings {
                    issuer: issuer.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scopes,
                    groups_claim: self.oidc_groups_claim.clone(),
                    label: self.oidc_label.clone(),
                    redirect_uri: format!("{public_url}/sign-in/oidc/callback"),
                })?)
            }
            _ => anyhow::bail!(
                "single sign-on needs CUSTODY_OIDC_ISSUER, CUSTODY_OIDC_CLIENT_ID and CUSTODY_OIDC_CLIENT_SECRET together"
            ),
        };
        let with_oidc = oidc.is_some();
        let email_links = match self.email_sign_in.as_str() {
            "on" => true,
            "off" => false,
            _ => !with_oidc,
        };
        let default = match self.approval_sign_in.as_str() {
            "link" => ApprovalSignIn::Link,
            "session" => ApprovalSignIn::Session,
            _ if with_oidc => ApprovalSignIn::Session,
            _ => ApprovalSignIn::Link,
        };
        let allowed_domains = self
            .allowed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        let chrono = |d: std::time::Duration| {
            chrono::Duration::from_std(d).context("a sign-in duration is too long")
        };
        Ok(crate::sign_in::SignIn {
            oidc,
            email_links,
            allowed_domains,
            sessions: crate::sessions::SessionLimits {
                idle: chrono(self.session_idle_timeout)?,
                max_age: chrono(self.session_max_age)?,
            },
            approvals: ApprovalRules {
                default,
                recent_sign_in: chrono(self.approval_recent_sign_in)?,
            },
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct WebhookOptions {
    /// Networks (CIDRs, comma-separated, e.g. 10.0.0.0/8,127.0.0.1/32) webhooks may reach although
    /// they are private, loopback or link-local; unset: only public addresses.
    #[arg(long, env = "CUSTODY_WEBHOOK_ALLOW_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub webhook_allow_networks: Vec<ipnet::IpNet>,
    /// Delivery attempts of one webhook call before it is marked failed.
    #[arg(long, env = "CUSTODY_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: i32,
}

/// Parses `10.0.0.0/8`, `fd00::/8`, or a single address (`127.0.0.1` = `/32`).
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not a network like 10.0.0.0/8 or an IP address"))
}

#[derive(Args, Debug, Clone)]
pub struct ArtifactOptions {
    /// Artifact store: a directory, or s3://bucket/prefix; unset uses <data-dir>/artifacts.
    #[arg(long = "artifacts", env = "CUSTODY_ARTIFACTS")]
    pub location: Option<String>,
    /// S3 endpoint for S3-compatible stores (MinIO, Ceph, Garage, R2); unset means AWS.
    #[arg(long, env = "CUSTODY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Path-style addressing (bucket in the path); default: on when an endpoint is given.
    #[arg(long, env = "CUSTODY_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Largest artifact accepted, e.g. 64GiB.
    #[arg(long, env = "CUSTODY_MAX_ARTIFACT_SIZE", default_value = "64GiB", value_parser = parse_size)]
    pub max_artifact_size: u64,
    /// Multipart part size, 8MiB to 64MiB.
    #[arg(long, env = "CUSTODY_ARTIFACT_PART_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// How long an unfinished upload may stay before its leftovers are swept, e.g. 24h.
    #[arg(long, env = "CUSTODY_SWEEP_GRACE", default_value = "24h", value_parser = parse_duration)]
    pub sweep_grace: std::time::Duration,
    /// How often each replica sweeps.
    #[arg(long, env = "CUSTODY_SWEEP_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub sweep_interval: std::time::Duration,
}

/// Parses `123`, `8MiB`, `64GiB`, `10MB`, …
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 8MiB or 64GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `90s`, `10m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::auth::parse_ttl(text)
        .map_err(|e| e.to_string())
        .and_then(|d| d.to_std().map_err(|e| e.to_string()))
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a bearer token (creates the user if needed) and print it.
    Issue {
        #[arg(long)]
        email: String,
        /// Grant the server-wide admin role.
        #[arg(long)]
        admin: bool,
        /// Grant the server-wide auditor role (export every project's audit log, read-only).
        #[arg(long)]
        auditor: bool,
        /// Lifetime such as 30d, 12h, 15m or 90s.
        #[arg(long, default_value = "30d")]
        ttl: String,
        #[command(flatten)]
        database: DatabaseOptions,
        #[command(flatten)]
        token_secret: TokenSecretOption,
    },
}

impl ServeOptions {
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!(
                "--listen `{}` is not an address like 127.0.0.1:8080",
                self.listen
            )
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for origin in &self.cors_origins {
            let url = url::Url::parse(origin).with_context(|| {
                format!("CORS origin `{origin}` is not a URL like https://dash.example.com")
            })?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https") && url.path() == "/" && url.query().is_none(),
                "CORS origin `{origin}` must be a scheme and host only, like https://dash.example.com"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.db_pool_size),
            "--db-pool-size must be between 1 and 1000"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.exports.export_pool_size),
            "CUSTODY_EXPORT_POOL_SIZE must be between 1 and 100"
        );
        anyhow::ensure!(
            self.exports.exports_per_user >= 1,
            "CUSTODY_EXPORTS_PER_USER must be at least 1"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.webhooks.webhook_max_attempts),
            "CUSTODY_WEBHOOK_MAX_ATTEMPTS must be between 1 and 100"
        );
        anyhow::ensure!(
            (64 << 10..=1 << 30).contains(&self.graphql_max_body),
            "CUSTODY_GRAPHQL_MAX_BODY must be between 64KiB and 1GiB"
        );
        if let Some(token) = &self.metrics_token {
            anyhow::ensure!(
                token.len() >= 32,
                "CUSTODY_METRICS_TOKEN must be at least 32 characters"
            );
        }
        anyhow::ensure!(
            (8 << 20..=64 << 20).contains(&self.artifacts.part_size),
            "CUSTODY_ARTIFACT_PART_SIZE must be between 8MiB and 64MiB"
        );
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).with_context(|| {
                format!("CUSTODY_PUBLIC_URL `{url}` is not a URL like https://custody.example.com")
            })?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "CUSTODY_PUBLIC_URL must be an http or https URL"
            );
        }
        Ok(())
    }
}

impl ArtifactOptions {
    /// Opens the configured store (creating the local directory if needed).
    pub fn open_store(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<crate::artifacts::ArtifactStore> {
        use crate::artifacts::store::{ArtifactStore, LocalStore, S3Settings, S3Store};
        match self.location.as_deref() {
            Some(location) if location.starts_with("s3://") => {
                let url = url::Url::parse(location).with_context(|| {
                    format!("CUSTODY_ARTIFACTS `{location}` is not like s3://bucket/prefix")
                })?;
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "CUSTODY_ARTIFACTS `{location}` names no bucket; use s3://bucket/prefix"
                    )
                })?;
                if let Some(endpoint) = &self.s3_endpoint {
                    url::Url::parse(endpoint)
                        .with_context(|| format!("CUSTODY_S3_ENDPOINT `{endpoint}` is not a URL like http://127.0.0.1:9000"))?;
                }
                Ok(ArtifactStore::S3(S3Store::new(S3Settings {
                    bucket: bucket.to_owned(),
                    prefix: url.path().trim_matches('/').to_owned(),
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    access_key_id: self.s3_access_key_id.clone(),
                    secret_access_key: self.s3_secret_access_key.clone(),
                    path_style: self.s3_path_style.unwrap_or(self.s3_endpoint.is_some()),
                    part_size: self.part_size as usize,
                })))
            }
            Some(location) if location.contains("://") => anyhow::bail!(
                "CUSTODY_ARTIFACTS `{location}` is neither a directory nor s3://bucket/prefix"
            ),
            Some(dir) => Ok(ArtifactStore::Local(LocalStore::new(
                std::path::Path::new(dir),
            )?)),
            None => Ok(ArtifactStore::Local(LocalStore::new(
                &data_dir.join("artifacts"),
            )?)),
        }
    }
}

/// Creates the data directory and proves it is writable, so a bad path fails at start, clearly.
/// It holds keys, tokens and mailed approval links: it is made (and kept) private to the server's
/// user, mode 0700 (the embedded cluster, when it runs as `postgres`, gets to traverse it: see
/// `db::embedded`).
pub fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot make the data directory {} private (mode 0700)",
            dir.display()
        )
    })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    dir.canonicalize()
        .with_context(|| format!("resolving the data directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
