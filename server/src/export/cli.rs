//! `custody-server audit …`: verify (offline), public-key, archive.

use std::path::PathBuf;

use clap::Subcommand;

use super::verify::{self, Options};
use super::{keys, AuditKeys, PublicKey};
use crate::auth::Actor;
use crate::config::{ArtifactOptions, GlobalOptions};

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
    },
    /// Print the public key that verifies this server's audit exports.
    PublicKey {
        /// `pem` (SubjectPublicKeyInfo) or `jwk`.
        #[arg(long, default_value = "pem", value_parser = ["pem", "jwk"])]
        format: String,
    },
    /// Write a verified export of every entry older than DATE to the artifact store. Never
    /// deletes audit entries.
    Archive {
        /// RFC 3339 time or date (UTC midnight): entries strictly before it are archived.
        #[arg(long)]
        before: String,
        #[command(flatten)]
        artifacts: ArtifactOptions,
    },
}

pub async fn run(global: &GlobalOptions, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            file,
            public_key,
            checkpoints,
        } => {
            // Offline by design: only files are read (the data directory is not created).
            let key = match public_key {
                Some(path) => PublicKey::read_file(&path)?,
                None => local_public_key(global)?,
            };
            let checkpoints = match checkpoints {
                Some(path) => verify::read_checkpoints(&path, &key)?,
                None => Vec::new(),
            };
            let options = Options {
                public_key: key,
                checkpoints,
            };
            let path = file.clone();
            let verdict =
                tokio::task::spawn_blocking(move || verify::verify_file(&path, &options)).await??;
            print!("{}", verdict.render(&file.display().to_string()));
            if verdict.ok() {
                Ok(())
            } else {
                // The verdict is printed; exit 1 without a second message.
                std::process::exit(1);
            }
        }
        AuditCommand::PublicKey { format } => {
            let data_dir = crate::config::prepare_data_dir(&global.data_dir)?;
            let keys = global.audit.load_keys(&data_dir)?;
            match format.as_str() {
                "jwk" => println!("{}", keys.public.to_jwk()),
                _ => print!("{}", keys.public.to_pem()),
            }
            Ok(())
        }
        AuditCommand::Archive { before, artifacts } => {
            let before = super::archive::parse_before(&before)?;
            let audit = global.audit.clone();
            crate::app::with_database(global, |urls, data_dir| async move {
                crate::db::migrate(&urls).await?;
                let url = urls.runtime;
                let keys = audit.load_keys(&data_dir)?;
                let store = artifacts.open_store(&data_dir)?;
                use diesel_async::AsyncConnection as _;
                let mut conn = diesel_async::AsyncPgConnection::establish(&url).await?;
                let reader = diesel_async::AsyncPgConnection::establish(&url).await?;
                let archived = super::archive::archive(
                    &mut conn,
                    reader,
                    &keys,
                    &store,
                    &Actor::system("archive"),
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

/// The public half of the configured key, or of `<data-dir>/audit-signing.pk8`; never creates one.
fn local_public_key(global: &GlobalOptions) -> anyhow::Result<PublicKey> {
    let configured = global.audit.audit_signing_key.as_deref();
    let path = global.data_dir.join(keys::KEY_FILE);
    if configured.is_none() && !path.exists() {
        anyhow::bail!(
            "no public key to verify with: pass --public-key FILE (from GET /api/audit/public-key or \
             `custody-server audit public-key` on the server), or run where {} exists",
            path.display()
        );
    }
    Ok(AuditKeys::load(configured, &global.data_dir)?.public)
}
