//! `custody`: the command line of Custody, for people and CI pipelines.
//!
//! Every command takes `--json` (one JSON document on stdout; errors as `{"error": …}` on
//! stderr). Exit codes: 0 ok, 2 usage, 3 not found, 4 unauthenticated or forbidden, 5 refused
//! (conflict, invalid input, policy denied), 1 anything else.

mod config;
mod device;
mod tree;
mod ui;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use custody::{
    Client, LineageDirection, MetricPoint, NewDatasetVersion, NewModel, NewRun, NodeKind, NodeRef,
    Owner, PromotionStatus, RunStatus, TransferOptions,
};
use serde_json::{json, Value};

use crate::ui::{exit, human_bytes, CliError, Ui};

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 unauthenticated or forbidden,
5 refused (conflict, invalid input, policy denied).
Login: `custody login --url URL` (approve the code it shows in a signed-in browser) stores URL
and tokens in $XDG_CONFIG_HOME/custody/config.json (~/.config/custody/config.json, mode 0600);
CUSTODY_URL and CUSTODY_TOKEN override it.";

#[derive(Parser)]
#[command(name = "custody", version, about = "The Custody model registry from the command line", after_help = AFTER_HELP)]
struct Cli {
    /// Print one JSON document on stdout (errors as JSON on stderr); no progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in: without --token, approve a code in a signed-in browser (OAuth device flow; the
    /// short-lived token and its refresh token are stored); with --token, store that token.
    Login {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: Option<String>,
    },
    /// Forget the stored login.
    Logout,
    /// Who the stored token belongs to, and their projects.
    Whoami,
    /// List your projects, or create one.
    Projects {
        #[command(subcommand)]
        command: Option<ProjectsCommand>,
    },
    /// Register dataset versions from local files or directories.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Start runs, log params and metrics, finish them.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Push files to a run, pull files of runs and model versions.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Register model versions.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Request, approve, reject and follow promotions of model versions.
    Promote {
        #[command(subcommand)]
        command: PromoteCommand,
    },
    /// Show what a node came from, or what came from it.
    Lineage {
        #[command(subcommand)]
        command: LineageCommand,
    },
    /// Export the audit log, and verify exports and compliance reports offline.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum ProjectsCommand {
    /// The projects you belong to (the default).
    List,
    /// Create a project; you become its admin.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Compute the SHA-256 of FILE (or the directory digest of DIR, see the README) and register
    /// it as the next version of the dataset (created if missing).
    Register(DatasetRegistration),
}

/// The arguments of `custody datasets register`.
#[derive(Args)]
struct DatasetRegistration {
    #[arg(long)]
    project: String,
    #[arg(long)]
    dataset: String,
    /// A file or a directory.
    path: PathBuf,
    /// A tag of the version (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Where the data lives (default: file://<absolute path>).
    #[arg(long)]
    uri: Option<String>,
    /// Dataset version ids this version was made from (repeatable).
    #[arg(long = "derived-from")]
    derived_from: Vec<String>,
    /// Description, if the dataset is created.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Start a run; prints its id.
    Start {
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: Option<String>,
        /// A dataset version id the run consumes (repeatable).
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// The code commit (40 hex) the run executes; needs --repository.
        #[arg(long, requires = "repository")]
        commit: Option<String>,
        #[arg(long, requires = "commit")]
        repository: Option<String>,
        #[arg(long, requires = "commit")]
        branch: Option<String>,
        /// The working tree had uncommitted changes.
        #[arg(long, requires = "commit")]
        dirty: bool,
        /// A tag `key=value` (repeatable).
        #[arg(long = "tag", value_parser = parse_key_value)]
        tags: Vec<(String, String)>,
    },
    /// Log params (`--param k=v`) and metrics (`--metric k=v[@step]`) to a run.
    Log {
        run: String,
        #[arg(long = "param", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
        #[arg(long = "metric", value_parser = parse_metric)]
        metrics: Vec<MetricPoint>,
    },
    /// Finish a run.
    Finish {
        run: String,
        #[arg(long, value_enum, default_value = "finished")]
        status: FinalStatus,
    },
    /// A run's status, params, inputs, files and latest metrics.
    Show { run: String },
    /// Runs matching a filter in MLflow's search syntax, e.g.
    /// `--filter "metrics.auc > 0.9 and params.depth = '6'" --order-by "metrics.auc DESC"`.
    Search {
        /// A project to search (repeatable; default: every project you may read).
        #[arg(long = "project")]
        projects: Vec<String>,
        #[arg(long)]
        filter: Option<String>,
        /// An order key, `metrics.auc`, `params.depth DESC`, `attributes.start_time` (repeatable).
        #[arg(long = "order-by")]
        order_by: Vec<String>,
        /// At most this many runs (pages of 100 are fetched as needed).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FinalStatus {
    Finished,
    Failed,
    Killed,
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// Upload FILE to a run (SHA-256 computed first; large files in resumable parts).
    Push {
        run: String,
        file: PathBuf,
        /// The path in the run (default: the file's name).
        #[arg(long)]
        path: Option<String>,
        /// Files at least this large go in parts through direct upload URLs.
        #[arg(long, default_value = "64MiB", value_parser = ui::parse_size)]
        multipart_threshold: u64,
    },
    /// Download a file of a run or a model version, verifying its SHA-256.
    Pull {
        #[arg(value_enum)]
        owner: OwnerKind,
        id: String,
        path: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OwnerKind {
    Run,
    ModelVersion,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Register the next version of a model (created if missing) from a run's files.
    Register {
        #[arg(long)]
        project: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        run: String,
        /// Take the run's files at or under this path; the version's paths are relative to it
        /// (`model/w.bin` registered from `model` is `w.bin`). Without it the version has no files.
        #[arg(long)]
        artifact_path: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum PromoteCommand {
    /// Ask to move a model version to a stage (exit 5 if the policies deny it).
    Request {
        model_version_id: String,
        #[arg(long)]
        stage: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Approve a pending promotion.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a pending promotion.
    Reject {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Cancel a pending promotion you requested.
    Cancel { id: String },
    /// A promotion's status, policy result and decisions.
    Status { id: String },
}

#[derive(Subcommand)]
enum LineageCommand {
    /// Print the lineage of a node as a tree.
    Show {
        #[arg(value_enum)]
        kind: Kind,
        id: String,
        #[arg(long, value_enum, default_value = "up")]
        direction: Direction,
        /// Steps to follow (0–50).
        #[arg(long, default_value_t = 3)]
        depth: i64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    DatasetVersion,
    CodeCommit,
    Run,
    ModelVersion,
    Deployment,
}

#[derive(Clone, Copy, ValueEnum)]
enum Direction {
    Up,
    Down,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Stream the audit log of a period, with its chain hashes, into a file.
    Export(ExportArgs),
    /// Verify an audit export (JSON Lines or CSV) or a signed compliance report, offline: no
    /// server, no login. Exit 0 when intact; 1 naming the first bad entry otherwise.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The export or report file.
    file: PathBuf,
    /// The server's public key, PEM or JWK (GET /api/audit/public-key, which needs no token).
    #[arg(long)]
    public_key: PathBuf,
    /// Checkpoints to hold the export against (GET /api/audit/checkpoints, or earlier exports'
    /// manifest lines): a log that lost its tail or was rewritten contradicts them.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    /// Start of the period (RFC 3339 or a date, as the server accepts).
    #[arg(long)]
    from: Option<String>,
    /// End of the period.
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
    /// Only this project's entries.
    #[arg(long)]
    project: Option<String>,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

fn parse_metric(text: &str) -> Result<MetricPoint, String> {
    let (key, rest) = parse_key_value(text)?;
    let (value, step) = match rest.rsplit_once('@') {
        Some((v, s)) => (
            v,
            Some(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("`{s}` in `{text}` is not an integer step"))?,
            ),
        ),
        None => (rest.as_str(), None),
    };
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` in `{text}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("`{text}`: metric values must be finite"));
    }
    Ok(MetricPoint::new(key, value, step))
}

fn main() {
    let cli = Cli::parse();
    let ui = Ui { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui.print_error(&CliError::other(format!("cannot start: {e}")));
            std::process::exit(exit::OTHER);
        }
    };
    let code = match runtime.block_on(run(cli.command, ui)) {
        Ok(()) => exit::OK,
        Err(err) => {
            ui.print_error(&err);
            err.exit
        }
    };
    drop(runtime);
    std::process::exit(code);
}

async fn client() -> Result<Client, CliError> {
    let (url, token) = config::credentials().await?;
    Ok(Client::new(&url, Some(&token))?)
}

async fn run(command: Command, ui: Ui) -> Result<(), CliError> {
    match command {
        Command::Login { url, token } => login(ui, &url, token.as_deref()).await,
        Command::Logout => {
            let path = config::config_path()?;
            let existed = path.exists();
            if existed {
                std::fs::remove_file(&path)
                    .map_err(|e| CliError::other(format!("removing {}: {e}", path.display())))?;
            }
            ui.print(&json!({"loggedOut": existed, "config": path}), || {
                if existed {
                    format!("Removed {}", path.display())
                } else {
                    "Not logged in".into()
                }
            });
            Ok(())
        }
        Command::Whoami => {
            let c = client().await?;
            let me = c.me().await?;
            ui.print(&json!({"url": c.url(), "me": me}), || {
                let mut text = format!(
                    "{} at {}{}\n",
                    me.email,
                    c.url(),
                    if me.is_admin { " (server admin)" } else { "" }
                );
                for m in &me.memberships {
                    text.push_str(&format!("  {}  {}\n", m.project.name, m.role));
                }
                text
            });
            Ok(())
        }
        Command::Projects { command } => {
            projects(ui, command.unwrap_or(ProjectsCommand::List)).await
        }
        Command::Datasets {
            command: DatasetsCommand::Register(registration),
        } => register_dataset(ui, registration).await,
        Command::Runs { command } => runs(ui, command).await,
        Command::Artifacts { command } => artifacts(ui, command).await,
        Command::Models {
            command:
                ModelsCommand::Register {
                    project,
                    model,
                    run,
                    artifact_path,
                    description,
                },
        } => {
            register_model(
                ui,
                &project,
                &model,
                &run,
                artifact_path.as_deref(),
                description.as_deref(),
            )
            .await
        }
        Command::Promote { command } => promote(ui, command).await,
        Command::Lineage {
            command:
                LineageCommand::Show {
                    kind,
                    id,
                    direction,
                    depth,
                },
        } => lineage(ui, kind, &id, direction, depth).await,
        Command::Audit {
            command: AuditCommand::Export(args),
        } => audit_export(ui, args).await,
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => audit_verify(ui, args),
    }
}

async fn login(ui: Ui, url: &str, token: Option<&str>) -> Result<(), CliError> {
    let url = url.trim().trim_end_matches('/');
    let (token, refresh_token, expires_at) = match token {
        Some(token) => (token.trim().to_owned(), None, None),
        None => {
            let tokens = device::login(url, |link, code| {
                eprintln!("To log in, open {link}\nand approve the code {code} (it expires in 10 minutes).");
            })
            .await?;
            (
                tokens.token,
                Some(tokens.refresh_token),
                Some(tokens.expires_at),
            )
        }
    };
    let c = Client::new(url, Some(&token))?;
    let me = c.me().await.map_err(|e| {
        CliError::from(e).or_hint("nothing was stored; check the URL and the token")
    })?;
    let path = config::config_path()?;
    config::save(
        &path,
        &config::Config {
            url: Some(c.url().to_owned()),
            token: Some(token),
            refresh_token,
            expires_at,
        },
    )?;
    ui.print(
        &json!({"url": c.url(), "email": me.email, "config": path}),
        || {
            format!(
                "Logged in to {} as {} (stored in {}, mode 0600)",
                c.url(),
                me.email,
                path.display()
            )
        },
    );
    Ok(())
}

async fn projects(ui: Ui, command: ProjectsCommand) -> Result<(), CliError> {
    let c = client().await?;
    match command {
        ProjectsCommand::List => {
            let me = c.me().await?;
            let list: Vec<Value> = me
                .memberships
                .iter()
                .map(|m| json!({"id": m.project.id, "name": m.project.name, "description": m.project.description, "role": m.role, "groups": m.groups}))
                .collect();
            ui.print(&json!({"projects": list}), || {
                if me.memberships.is_empty() {
                    return "No projects yet: create one with `custody projects create NAME`"
                        .into();
                }
                let width = me
                    .memberships
                    .iter()
                    .map(|m| m.project.name.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                let mut text = format!("{:width$}  {:11}  ID\n", "NAME", "ROLE");
                for m in &me.memberships {
                    text.push_str(&format!(
                        "{:width$}  {:11}  {}\n",
                        m.project.name,
                        m.role.as_str(),
                        m.project.id
                    ));
                }
                text
            });
        }
        ProjectsCommand::Create { name, description } => {
            let p = c.create_project(&name, description.as_deref()).await?;
            ui.print(&json!({"project": p}), || {
                format!("Created project {} ({}); you are its admin", p.name, p.id)
            });
        }
    }
    Ok(())
}

async fn register_dataset(ui: Ui, registration: DatasetRegistration) -> Result<(), CliError> {
    let DatasetRegistration {
        project,
        dataset,
        path,
        tags,
        uri,
        derived_from,
        description,
    } = registration;
    let (project, dataset, path) = (project.as_str(), dataset.as_str(), path.as_path());
    if !path.exists() {
        return Err(
            CliError::usage(format!("{} does not exist", path.display()))
                .hint("give an existing file or directory"),
        );
    }
    let c = client().await?;
    let local = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || custody::digest::local_digest(&local))
        .await
        .map_err(|e| CliError::other(format!("hashing failed: {e}")))??;
    if c.dataset(project, dataset).await?.is_none() {
        c.create_dataset(project, dataset, description.as_deref())
            .await?;
    }
    let uri = match uri {
        Some(u) => u,
        None => {
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| CliError::other(format!("{}: {e}", path.display())))?;
            format!("file://{}", absolute.display())
        }
    };
    let version = c
        .register_dataset_version(
            project,
            dataset,
            &NewDatasetVersion {
                uri,
                sha256: digest.sha256.clone(),
                size_bytes: i64::try_from(digest.size).ok(),
                tags,
                derived_from,
            },
        )
        .await?;
    let files = if digest.is_dir { digest.files.len() } else { 1 };
    ui.print(
        &json!({"datasetVersion": version, "digest": {"sha256": digest.sha256, "size": digest.size, "isDir": digest.is_dir, "files": files}}),
        || {
            format!(
                "Registered {dataset} v{} in {project}: sha256 {} ({} file{}, {})\nid: {}",
                version.version,
                version.sha256,
                files,
                if files == 1 { "" } else { "s" },
                human_bytes(digest.size),
                version.id
            )
        },
    );
    Ok(())
}

async fn runs(ui: Ui, command: RunsCommand) -> Result<(), CliError> {
    let c = client().await?;
    match command {
        RunsCommand::Start {
            project,
            name,
            inputs,
            commit,
            repository,
            branch,
            dirty,
            tags,
        } => {
            let code_commit_id = match (commit, repository) {
                (Some(commit), Some(repository)) => Some(
                    c.register_code_commit(&custody::NewCodeCommit {
                        repository,
                        commit,
                        branch,
                        dirty: Some(dirty),
                        ..Default::default()
                    })
                    .await?
                    .id,
                ),
                _ => None,
            };
            let tags = if tags.is_empty() {
                None
            } else {
                Some(Value::Object(
                    tags.into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ))
            };
            let run = c
                .start_run(
                    &project,
                    &NewRun {
                        name,
                        code_commit_id,
                        inputs,
                        tags,
                    },
                )
                .await?;
            // Plain output is the id alone, for `RUN=$(custody runs start …)`.
            ui.print(&json!({"run": run}), || run.id.clone());
        }
        RunsCommand::Log {
            run,
            params,
            metrics,
        } => {
            if params.is_empty() && metrics.is_empty() {
                return Err(CliError::usage("nothing to log")
                    .hint("give --param key=value and/or --metric key=value[@step]"));
            }
            if !params.is_empty() {
                c.log_params(&run, &params).await?;
            }
            let stored = if metrics.is_empty() {
                0
            } else {
                c.log_metrics(&run, &metrics).await?
            };
            ui.print(
                &json!({"run": run, "params": params.len(), "metrics": stored}),
                || {
                    format!(
                        "Logged {} param(s) and {} metric(s) to run {run}",
                        params.len(),
                        stored
                    )
                },
            );
        }
        RunsCommand::Finish { run, status } => {
            let status = match status {
                FinalStatus::Finished => RunStatus::Finished,
                FinalStatus::Failed => RunStatus::Failed,
                FinalStatus::Killed => RunStatus::Killed,
            };
            let done = c.finish_run(&run, status).await?;
            ui.print(&json!({"run": done}), || {
                format!("Run {} is {}", done.id, done.status)
            });
        }
        RunsCommand::Search {
            projects,
            filter,
            order_by,
            limit,
        } => {
            let order: Vec<(String, bool)> = order_by
                .iter()
                .map(|key| match key.rsplit_once(' ') {
                    Some((k, dir)) if dir.eq_ignore_ascii_case("desc") => (k.to_owned(), true),
                    Some((k, dir)) if dir.eq_ignore_ascii_case("asc") => (k.to_owned(), false),
                    _ => (key.clone(), false),
                })
                .collect();
            let mut found = Vec::new();
            let mut after: Option<String> = None;
            while found.len() < limit {
                let first = (limit - found.len()).min(100) as i64;
                let page = c
                    .search_runs(
                        &projects,
                        filter.as_deref(),
                        &order,
                        Some(first),
                        after.as_deref(),
                    )
                    .await?;
                after = page.edges.last().map(|e| e.cursor.clone());
                let more = page.page_info.has_next_page && after.is_some();
                found.extend(page.edges.into_iter().map(|e| e.node));
                if !more {
                    break;
                }
            }
            ui.print(&json!({ "runs": found }), || {
                let mut text = String::new();
                for run in &found {
                    text.push_str(&format!(
                        "{}  {:<10} {:<20} {}  {}\n",
                        run.id,
                        run.status,
                        run.project.name,
                        run.started_at,
                        run.name.as_deref().unwrap_or("")
                    ));
                }
                if found.is_empty() {
                    text.push_str("no runs match\n");
                }
                text
            });
        }
        RunsCommand::Show { run } => {
            let found = c.run(&run).await?.ok_or_else(|| not_found_run(&run))?;
            let metrics = c.run_metrics(&run, None).await?.unwrap_or_default();
            ui.print(&json!({"run": found, "metrics": metrics}), || {
                let mut text = format!(
                    "run {}{}\n  project  {}\n  status   {}\n  started  {}\n",
                    found.id,
                    found
                        .name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    found.project.name,
                    found.status,
                    found.started_at
                );
                if let Some(end) = &found.ended_at {
                    text.push_str(&format!("  ended    {end}\n"));
                }
                if let Some(cc) = &found.code_commit {
                    text.push_str(&format!(
                        "  commit   {} {}{}\n",
                        cc.repository,
                        cc.commit,
                        if cc.dirty { " (dirty)" } else { "" }
                    ));
                }
                for p in &found.params {
                    text.push_str(&format!("  param    {} = {}\n", p.key, p.value));
                }
                // The latest value of each metric key (the history is in --json).
                let mut last: std::collections::BTreeMap<&str, (i64, f64)> = Default::default();
                for m in &metrics {
                    last.insert(&m.key, (m.step, m.value));
                }
                for (k, (step, v)) in last {
                    text.push_str(&format!("  metric   {k} = {v} (step {step})\n"));
                }
                for i in &found.inputs {
                    text.push_str(&format!(
                        "  input    dataset version {} v{} {}\n",
                        i.id, i.version, i.sha256
                    ));
                }
                for a in &found.artifacts {
                    text.push_str(&format!(
                        "  file     {} ({}, {})\n",
                        a.path,
                        human_bytes(a.size.max(0) as u64),
                        a.sha256
                    ));
                }
                text
            });
        }
    }
    Ok(())
}

fn not_found_run(id: &str) -> CliError {
    CliError::not_found(format!("no run {id}"))
        .hint("check the run id (`custody runs start` printed it)")
}

async fn artifacts(ui: Ui, command: ArtifactsCommand) -> Result<(), CliError> {
    match command {
        ArtifactsCommand::Push {
            run,
            file,
            path,
            multipart_threshold,
        } => {
            if !file.is_file() {
                return Err(CliError::usage(format!("{} is not a file", file.display()))
                    .hint("give the path of an existing file"));
            }
            let path = match path {
                Some(p) => p,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| CliError::usage("the file name is not UTF-8; give --path"))?,
            };
            let c = client().await?;
            let options = TransferOptions {
                progress: ui.progress(),
                multipart_threshold,
                state_dir: config::state_dir(),
                ..Default::default()
            };
            let artifact = c
                .upload_artifact(&Owner::Run(run.clone()), &path, &file, &options)
                .await?;
            ui.print(&json!({"run": run, "artifact": artifact}), || {
                format!(
                    "Uploaded {} to run {run} as {} ({}, sha256 {})",
                    file.display(),
                    artifact.path,
                    human_bytes(artifact.size.max(0) as u64),
                    artifact.sha256
                )
            });
        }
        ArtifactsCommand::Pull {
            owner,
            id,
            path,
            output,
        } => {
            let owner = match owner {
                OwnerKind::Run => Owner::Run(id),
                OwnerKind::ModelVersion => Owner::ModelVersion(id),
            };
            let c = client().await?;
            let options = TransferOptions {
                progress: ui.progress(),
                ..Default::default()
            };
            let artifact = c
                .download_artifact(&owner, &path, &output, &options)
                .await?;
            ui.print(&json!({"artifact": artifact, "file": output}), || {
                format!(
                    "Downloaded {} to {} ({}, sha256 {} verified)",
                    artifact.path,
                    output.display(),
                    human_bytes(artifact.size.max(0) as u64),
                    artifact.sha256
                )
            });
        }
    }
    Ok(())
}

async fn register_model(
    ui: Ui,
    project: &str,
    model: &str,
    run: &str,
    artifact_path: Option<&str>,
    description: Option<&str>,
) -> Result<(), CliError> {
    let c = client().await?;
    if c.model(project, model).await?.is_none() {
        c.create_model(project, model, &NewModel::default()).await?;
    }
    let v = c
        .register_model_version(project, model, run, artifact_path, description)
        .await?;
    ui.print(&json!({"modelVersion": v}), || {
        format!(
            "Registered {model} v{} in {project} from run {run}: {} file(s), manifest sha256 {}\nid: {}",
            v.version,
            v.artifacts.len(),
            v.manifest_sha256,
            v.id
        )
    });
    Ok(())
}

fn describe_promotion(p: &custody::Promotion) -> String {
    let version = format!(
        "{} v{}",
        p.model_version.model.name, p.model_version.version
    );
    let mut text = format!(
        "promotion {}\n  {} → {}: {}\n",
        p.id, version, p.stage, p.status
    );
    match p.status {
        PromotionStatus::Applied => text.push_str(&format!("  {version} is now in {}\n", p.stage)),
        PromotionStatus::Pending => {
            let approvals = p
                .approvals
                .iter()
                .filter(|a| a.decision == custody::ApprovalDecision::Approve)
                .count();
            text.push_str(&format!(
                "  waiting for approvals: {approvals} of {}{}; expires {}\n  follow it with `custody promote status {}`\n",
                p.required_approvals,
                p.approver_group.as_deref().map(|g| format!(" (approver group {g})")).unwrap_or_default(),
                p.expires_at,
                p.id
            ));
        }
        PromotionStatus::Denied => {
            for reason in deny_reasons(p) {
                text.push_str(&format!("  denied: {reason}\n"));
            }
        }
        _ => {}
    }
    text.push_str(&format!(
        "  requested by {} at {}\n",
        p.requested_by.email, p.created_at
    ));
    for a in &p.approvals {
        text.push_str(&format!(
            "  {} by {} via {} at {}{}\n",
            a.decision.as_str().to_lowercase(),
            a.approver.email,
            a.via,
            a.at,
            a.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    text
}

fn deny_reasons(p: &custody::Promotion) -> Vec<String> {
    p.policy_result["deny"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    r.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| r.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn promote(ui: Ui, command: PromoteCommand) -> Result<(), CliError> {
    let c = client().await?;
    let promotion = match command {
        PromoteCommand::Request {
            model_version_id,
            stage,
            comment,
        } => {
            let p = c
                .request_promotion(&model_version_id, &stage, comment.as_deref())
                .await?;
            if p.status == PromotionStatus::Denied {
                ui.print(&json!({"promotion": p}), || describe_promotion(&p));
                return Err(CliError::refused(
                    "POLICY_DENIED",
                    format!(
                        "the policies deny promotion {}: {}",
                        p.id,
                        deny_reasons(&p).join("; ")
                    ),
                )
                .hint(
                    "fix what the reasons name (metrics, lineage, approvals), then request again",
                ));
            }
            p
        }
        PromoteCommand::Approve { id, comment } => {
            c.approve_promotion(&id, comment.as_deref()).await?
        }
        PromoteCommand::Reject { id, comment } => {
            let comment =
                comment.unwrap_or_else(|| "rejected with the custody command line".into());
            c.reject_promotion(&id, &comment).await?
        }
        PromoteCommand::Cancel { id } => c.cancel_promotion(&id).await?,
        PromoteCommand::Status { id } => c.promotion(&id).await?.ok_or_else(|| {
            CliError::not_found(format!("no promotion {id}"))
                .hint("`custody promote request` printed the promotion's id")
        })?,
    };
    ui.print(&json!({"promotion": promotion}), || {
        describe_promotion(&promotion)
    });
    Ok(())
}

async fn lineage(
    ui: Ui,
    kind: Kind,
    id: &str,
    direction: Direction,
    depth: i64,
) -> Result<(), CliError> {
    if !(0..=50).contains(&depth) {
        return Err(CliError::usage("--depth must be between 0 and 50"));
    }
    let kind = match kind {
        Kind::DatasetVersion => NodeKind::DatasetVersion,
        Kind::CodeCommit => NodeKind::CodeCommit,
        Kind::Run => NodeKind::Run,
        Kind::ModelVersion => NodeKind::ModelVersion,
        Kind::Deployment => NodeKind::Deployment,
    };
    let direction = match direction {
        Direction::Up => LineageDirection::Upstream,
        Direction::Down => LineageDirection::Downstream,
    };
    let c = client().await?;
    let graph = c
        .lineage(&NodeRef::new(kind, id), direction, Some(depth))
        .await?;
    ui.print(&json!({"lineage": graph}), || {
        tree::render(&graph, &(kind, id.to_owned()), direction)
    });
    Ok(())
}

async fn audit_export(ui: Ui, args: ExportArgs) -> Result<(), CliError> {
    let c = client().await?;
    let mut query: Vec<(&str, String)> = vec![(
        "format",
        match args.format {
            ExportFormat::Jsonl => "jsonl".into(),
            ExportFormat::Csv => "csv".into(),
        },
    )];
    for (name, value) in [
        ("from", args.from),
        ("to", args.to),
        ("project", args.project),
    ] {
        if let Some(v) = value {
            query.push((name, v));
        }
    }
    let export = c
        .audit_export(&query, &args.output, ui.progress())
        .await
        .map_err(|e| match e.code() {
            Some(custody::ErrorCode::NotFound) => CliError::from(e).hint(
                "this server has no audit export (GET /api/audit/export); upgrade the server",
            ),
            Some(custody::ErrorCode::Forbidden) => CliError::from(e).hint(
                "the export is for server admins and auditors (or project admins with --project)",
            ),
            _ => CliError::from(e),
        })?;
    ui.print(&json!({"export": export}), || {
        format!(
            "Wrote {} ({}, sha256 {}){}",
            export.file.display(),
            human_bytes(export.bytes),
            export.sha256,
            export
                .head_seq
                .map(|s| format!("; covers the log up to seq {s}"))
                .unwrap_or_default()
        )
    });
    Ok(())
}

/// The same check and verdict as `custody-server audit verify` (one crate does both).
fn audit_verify(ui: Ui, args: VerifyArgs) -> Result<(), CliError> {
    use custody_audit_format::{verify, PublicKey};
    for path in [
        Some(&args.file),
        Some(&args.public_key),
        args.checkpoints.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if !path.is_file() {
            return Err(CliError::usage(format!("{} is not a file", path.display())));
        }
    }
    let key = PublicKey::read_file(&args.public_key).map_err(|e| {
        CliError::other(e.to_string()).hint(
            "the key is served by GET /api/audit/public-key (no token needed) and printed by `custody-server audit public-key`",
        )
    })?;
    // Reads and hashes on threads of its own; nothing else runs meanwhile.
    let verdict = verify::check(&args.file, key, args.checkpoints.as_deref())
        .map_err(|e| CliError::other(e.to_string()))?;
    let file = args.file.display().to_string();
    let problems: Vec<Value> = verdict
        .problems
        .iter()
        .map(|p| json!({"kind": p.kind.label(), "seq": p.seq, "line": p.line, "detail": p.detail}))
        .collect();
    ui.print(
        &json!({"verdict": {
            "ok": verdict.ok(),
            "file": file,
            "what": verdict.what,
            "entries": verdict.entries,
            "firstSeq": verdict.first_seq,
            "lastSeq": verdict.last_seq,
            "keyId": verdict.key_id,
            "signatureOk": verdict.signature_ok,
            "checkpointsChecked": verdict.checkpoints_checked,
            "problems": problems,
            "moreProblems": verdict.more_problems,
            "manifest": verdict.manifest,
        }}),
        || verdict.render(&file),
    );
    if verdict.ok() {
        Ok(())
    } else {
        Err(CliError::reported(exit::OTHER, "VERIFICATION_FAILED"))
    }
}
