//! The commands of the `custody-server` binary.

use std::path::PathBuf;

use anyhow::Context as _;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncConnection;

use std::sync::Arc;

use crate::actor::Actor;
use crate::artifacts::{self, Artifacts};
use crate::audit::{self, AuditKeys};
use crate::auth::{self, TokenKeys};
use crate::config::{
    self, AuditCommand, AuditOptions, Cli, Command, DatabaseOptions, PolicyCommand, ServeOptions,
    TokenCommand,
};
use crate::db::{self, embedded::EmbeddedPostgres};
use crate::http::{self, HttpConfig};
use crate::notify::{self, Delivery, MailTransport};
use crate::policy::PolicyBundle;
use crate::promotions;
use crate::state::AppState;

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colour codes only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("CUSTODY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(options) => serve(options).await,
        Command::Migrate { database } => {
            with_database(&database, |urls, _| async move {
                let applied = db::migrate(&urls).await?;
                eprintln!("{} migration(s) applied", applied.len());
                Ok(())
            })
            .await
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    email,
                    admin,
                    auditor,
                    ttl,
                    database,
                    token_secret,
                },
        } => {
            let ttl = auth::parse_ttl(&ttl)?;
            let jwt_secret = token_secret.jwt_secret;
            with_database(&database, |urls, data_dir| async move {
                db::migrate(&urls).await?;
                let keys = TokenKeys::load(jwt_secret.as_deref(), &data_dir)?;
                let mut conn = diesel_async::AsyncPgConnection::establish(&urls.runtime).await?;
                let actor = Actor::system("cli");
                let token = audit::transaction(&mut conn, |c| {
                    async move {
                        let token = auth::issue_token(c, &keys, &actor, &email, admin, ttl).await?;
                        if auditor {
                            audit::export::grant_auditor(c, &actor, &email).await?;
                        }
                        Ok::<_, crate::error::Error>(token)
                    }
                    .scope_boxed()
                })
                .await?;
                println!("{token}");
                Ok(())
            })
            .await
        }
        Command::Audit { command } => audit_command(command).await,
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => {
            let report = crate::policy::run_tests(dir.as_deref())?;
            for name in &report.passed {
                println!("PASS {name}");
            }
            for (name, why) in &report.failed {
                println!("FAIL {name}: {why}");
            }
            println!(
                "{} passed, {} failed",
                report.passed.len(),
                report.failed.len()
            );
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} policy test(s) failed",
                report.failed.len()
            );
            Ok(())
        }
    }
}

/// `custody-server audit …`.
async fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            file,
            public_key,
            checkpoints,
            local,
        } => {
            // Offline by design: only files are read (the data directory is not created).
            let key = match public_key {
                Some(path) => custody_audit_format::PublicKey::read_file(&path)?,
                None => AuditKeys::local_public_key(
                    local.audit_signing_key.as_deref(),
                    &local.data_dir,
                )?,
            };
            let path = file.clone();
            let verdict = tokio::task::spawn_blocking(move || {
                custody_audit_format::verify::check(&path, key, checkpoints.as_deref())
            })
            .await??;
            print!("{}", verdict.render(&file.display().to_string()));
            if !verdict.ok() {
                // The verdict is printed; exit 1 without a second message.
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::PublicKey {
            format,
            data_dir,
            key,
        } => {
            let data_dir = config::prepare_data_dir(&data_dir.path)?;
            let keys = key.load(&data_dir)?;
            match format.as_str() {
                "jwk" => println!("{}", keys.public.to_jwk()),
                _ => print!("{}", keys.public.to_pem()),
            }
            Ok(())
        }
        AuditCommand::Archive {
            before,
            database,
            key,
            artifacts,
        } => {
            let before = audit::archive::parse_before(&before)?;
            with_database(&database, |urls, data_dir| async move {
                db::migrate(&urls).await?;
                let keys = key.load(&data_dir)?;
                let store = artifacts.open_store(&data_dir)?;
                let archived = audit::archive::archive_command(
                    &urls.runtime,
                    &keys,
                    &store,
                    before,
                    &data_dir,
                )
                .await?;
                println!("{}", serde_json::to_string_pretty(&archived)?);
                Ok(())
            })
            .await
        }
    }
}

/// Gives `work` the database URLs: the configured ones, or the private cluster's (started for
/// the duration of `work` unless a server already runs it).
async fn with_database<F, Fut>(database: &DatabaseOptions, work: F) -> anyhow::Result<()>
where
    F: FnOnce(db::DatabaseUrls, PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let data_dir = config::prepare_data_dir(&database.data_dir.path)?;
    match configured_urls(database)? {
        Some(urls) => work(urls, data_dir).await,
        None => {
            let pg = EmbeddedPostgres::start(&data_dir).await?;
            let result = work(pg.urls(), data_dir).await;
            pg.stop().await?;
            result
        }
    }
}

/// `DATABASE_URL` (and `CUSTODY_MIGRATION_DATABASE_URL`), checked; `None` means the private
/// cluster.
fn configured_urls(database: &DatabaseOptions) -> anyhow::Result<Option<db::DatabaseUrls>> {
    match (&database.database_url, &database.migration_database_url) {
        (None, None) => Ok(None),
        (None, Some(_)) => anyhow::bail!(
            "CUSTODY_MIGRATION_DATABASE_URL is set without DATABASE_URL; set both (the private \
             cluster has its own roles)"
        ),
        (Some(url), migrate) => {
            db::validate_database_url(url)?;
            let mut urls = db::DatabaseUrls::single(url);
            if let Some(migrate) = migrate {
                db::validate_database_url(migrate).context("CUSTODY_MIGRATION_DATABASE_URL")?;
                urls.migrate = migrate.clone();
            }
            Ok(Some(urls))
        }
    }
}

async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    options.validate()?;
    let data_dir = config::prepare_data_dir(&options.database.data_dir.path)?;
    // A policy bundle that does not load stops start-up with the Rego error.
    let policy = match &options.policies {
        Some(dir) => PolicyBundle::from_dir(dir)?,
        None => PolicyBundle::embedded()?,
    };
    tracing::info!(policy.source = %policy.source, policy.digest = %policy.digest(), "promotion policies loaded");
    let addr = options.listen_addr()?;
    // Bind before the slow start-up so a taken port fails at once.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!("cannot listen on {addr}: the address is already in use")
        }
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    })?;
    let keys = TokenKeys::load(options.token_secret.jwt_secret.as_deref(), &data_dir)?;
    // Before the (slow) database start, so a bad store setting fails at once.
    let store = options.artifacts.open_store(&data_dir)?;
    let (urls, embedded) = match configured_urls(&options.database)? {
        Some(urls) => (urls, None),
        None => {
            let pg = EmbeddedPostgres::start(&data_dir).await?;
            (pg.urls(), Some(pg))
        }
    };
    let prepared = Prepared {
        data_dir,
        keys,
        store,
        policy,
        listener,
    };
    let result = serve_with_database(&urls, prepared, options).await;
    if let Some(pg) = embedded {
        if let Err(e) = pg.stop().await {
            tracing::error!(error = ?e, "stopping the private PostgreSQL cluster");
        }
    }
    result
}

/// What `serve` sets up before the database (each part fails fast on a bad setting).
struct Prepared {
    data_dir: PathBuf,
    keys: TokenKeys,
    store: artifacts::ArtifactStore,
    policy: PolicyBundle,
    /// Bound before the slow start-up, so a taken port fails at once.
    listener: std::net::TcpListener,
}

async fn serve_with_database(
    urls: &db::DatabaseUrls,
    prepared: Prepared,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let Prepared {
        data_dir,
        keys,
        store,
        policy,
        listener,
    } = prepared;
    let data_dir = data_dir.as_path();
    let audit_options: &AuditOptions = &options.audit;
    let applied = db::migrate(urls).await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "database migrated");
    }
    let workers = options.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let pool = db::pool(
        &urls.runtime,
        options.db_pool_size,
        workers,
        options.db_pool_timeout,
    )?;
    // Audit exports hold a connection for as long as their client reads: a pool of their own,
    // so that they can never take the connections every other request needs.
    let export_pool = db::shared_pool(
        &urls.runtime,
        options.exports.export_pool_size,
        options.db_pool_timeout,
    )?;
    let mut conn = pool.get().await.context("connecting to PostgreSQL")?;
    let token = audit::transaction(&mut conn, |c| {
        let keys = keys.clone();
        async move { auth::bootstrap_admin(c, &keys).await }.scope_boxed()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the first admin: {e}"))?;
    drop(conn);
    if let Some(token) = token {
        let path = data_dir.join("admin.token");
        auth::write_private_file(&path, format!("{token}\n").as_bytes())?;
        tracing::info!(path = %path.display(), "created {} and wrote its bearer token", auth::BOOTSTRAP_ADMIN);
    }
    let local = listener.local_addr()?;
    tracing::info!(store = %store.describe(), "artifact store ready");
    artifacts::spawn_sweeper(
        pool.clone(),
        store.clone(),
        options.artifacts.sweep_grace,
        options.artifacts.sweep_interval,
    );
    let audit = audit_options.key.load(data_dir)?;
    tracing::info!(key_id = %audit.public.key_id(), "audit signing key ready");
    audit::checkpoints::spawn_checkpointer(
        pool.clone(),
        audit.clone(),
        audit_options.audit_checkpoint_interval,
    );
    let public_url = options
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_owned();
    let sign_in = options.sign_in.build(&public_url)?;
    tracing::info!(
        oidc = sign_in.oidc.is_some(),
        email_links = sign_in.email_links,
        approvals = %sign_in.approvals.default,
        "sign-in ready"
    );
    let artifacts = Artifacts {
        store,
        max_size: options.artifacts.max_artifact_size,
        part_size: options.artifacts.part_size,
        public_url: public_url.clone(),
    };
    let mail = MailTransport::new(options.smtp_url.as_deref(), data_dir.join("outbox"))?;
    tracing::info!(mail = %mail.describe(), "mail delivery ready");
    let outbound = crate::outbound::WebhookPolicy::new(
        options.webhooks.webhook_allow_networks.clone(),
        options.webhooks.webhook_max_attempts,
    );
    let openlineage_out = options.openlineage_emit_url.clone().map(|url| {
        let host = url::Url::parse(&public_url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_owned(),
                })
            })
            .unwrap_or_else(|| "localhost".to_owned());
        crate::openlineage::emit::Target {
            url,
            api_key: options.openlineage_emit_api_key.clone(),
            namespace: format!("custody://{host}"),
        }
    });
    if let Some(target) = &openlineage_out {
        tracing::info!(url = %target.url, namespace = %target.namespace, "emitting OpenLineage events");
        crate::openlineage::emit::configure(target.clone());
    }
    let delivery = Delivery {
        openlineage: openlineage_out,
        mail,
        from: options.mail_from.parse().map_err(|e| {
            anyhow::anyhow!(
                "CUSTODY_MAIL_FROM `{}` is not a mailbox: {e}",
                options.mail_from
            )
        })?,
        webhooks: outbound.clone(),
    };
    notify::spawn_worker(pool.clone(), delivery, options.outbox_interval);
    promotions::spawn_expiry(pool.clone(), options.outbox_interval);
    let events = crate::events::Hub::start(urls.runtime.clone(), pool.clone()).await?;
    let metrics = crate::metric_queue::MetricQueue::start(pool.clone());
    let openlineage_in = crate::openlineage::Ingestion::start(
        pool.clone(),
        crate::openlineage::Namespaces::new(options.openlineage_namespaces.clone()),
    );
    tracing::info!(listen = %local, "custody-server listening; GraphiQL at http://{local}/graphql");
    http::run(
        AppState {
            pool,
            keys,
            artifacts,
            audit,
            policy: Arc::new(policy),
            public_url,
            webhooks: outbound,
            events,
            sign_in: Arc::new(sign_in),
            metrics,
            openlineage: openlineage_in,
        },
        HttpConfig {
            listener,
            cors_origins: options.cors_origins,
            workers: Some(workers),
            graphql_max_body: options.graphql_max_body as usize,
            metrics_token: options.metrics_token,
            exports: http::ExportLimits::new(export_pool, &options.exports),
        },
    )
    .await
}
