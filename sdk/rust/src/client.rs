//! The client: one method per operation of the API, each a typed GraphQL request.

use std::time::Duration;

use graphql_client::{GraphQLQuery, QueryBody};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorCode, Result};
use crate::ops::{self, LineageDirection, NodeKind, PromotionStatus, Role, RunStatus};
use crate::types::{
    AuditLogPage, DatasetVersion, LineageGraph, Metric, ModelVersion, Promotion, PromotionPage,
    Run, RunsPage,
};

/// How long one GraphQL request may take (transfers have no overall limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The server takes at most this many metrics per `logMetrics` call.
pub const MAX_METRICS_PER_CALL: usize = 1000;
/// The most metric points the server answers per request (`Run.metrics(first:)`).
pub const METRIC_PAGE: i64 = 10_000;

/// A connection to one Custody server, as one user (a bearer token). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    /// The server's base URL, without a trailing slash.
    pub(crate) base: String,
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.base)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A lineage node: its kind and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NodeRef {
    pub kind: NodeKind,
    pub id: String,
}

impl NodeRef {
    pub fn new(kind: NodeKind, id: impl Into<String>) -> NodeRef {
        NodeRef {
            kind,
            id: id.into(),
        }
    }
}

/// One metric observation to log.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub step: Option<i64>,
    /// RFC 3339; `None` lets the server stamp it.
    pub timestamp: Option<String>,
}

impl MetricPoint {
    pub fn new(key: impl Into<String>, value: f64, step: Option<i64>) -> MetricPoint {
        MetricPoint {
            key: key.into(),
            value,
            step,
            timestamp: None,
        }
    }
}

/// `registerDatasetVersion`'s arguments beyond project and dataset.
#[derive(Debug, Clone, Default)]
pub struct NewDatasetVersion {
    pub uri: String,
    pub sha256: String,
    pub size_bytes: Option<i64>,
    pub tags: Vec<String>,
    pub derived_from: Vec<String>,
}

/// `registerCodeCommit`'s arguments.
#[derive(Debug, Clone, Default)]
pub struct NewCodeCommit {
    pub repository: String,
    pub commit: String,
    pub branch: Option<String>,
    pub dirty: Option<bool>,
    pub author: Option<String>,
    pub message: Option<String>,
}

/// `startRun`'s arguments beyond the project.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub name: Option<String>,
    pub code_commit_id: Option<String>,
    /// Dataset version ids the run consumes.
    pub inputs: Vec<String>,
    /// An object of strings.
    pub tags: Option<serde_json::Value>,
}

/// `createModel`'s optional arguments.
#[derive(Debug, Clone, Default)]
pub struct NewModel {
    pub description: Option<String>,
    pub primary_metric: Option<String>,
    pub higher_is_better: Option<bool>,
}

/// Filters of `promotions`.
#[derive(Debug, Clone, Default)]
pub struct PromotionFilter {
    pub project: Option<String>,
    pub status: Option<PromotionStatus>,
    pub first: Option<i64>,
    pub after: Option<String>,
}

/// Filters of `auditLog`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub project: Option<String>,
    pub subject_id: Option<String>,
    pub action: Option<String>,
    pub first: Option<i64>,
    pub after: Option<String>,
}

/// Moves a value between two generated types of the same shape (the same fragment selected by
/// two operations), so that the SDK hands out one type per entity.
pub(crate) fn recast<A: Serialize, B: DeserializeOwned>(value: A) -> Result<B> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::Protocol(format!("reshaping an answer: {e}")))
}

fn opt_vec(v: &[String]) -> Option<Vec<String>> {
    if v.is_empty() {
        None
    } else {
        Some(v.to_vec())
    }
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:8080`) with a bearer token.
    pub fn new(url: &str, token: Option<&str>) -> Result<Client> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "the server URL `{url}` must start with http:// or https:// (e.g. http://127.0.0.1:8080)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("custody-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Invalid(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        })
    }

    /// A client from `CUSTODY_URL` and `CUSTODY_TOKEN`.
    pub fn from_env() -> Result<Client> {
        let url = std::env::var("CUSTODY_URL").map_err(|_| {
            Error::Invalid(
                "set CUSTODY_URL to the server's URL (e.g. http://127.0.0.1:8080)".into(),
            )
        })?;
        let token = std::env::var("CUSTODY_TOKEN").ok();
        Client::new(&url, token.as_deref())
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) fn transport(&self, source: reqwest::Error) -> Error {
        Error::Transport {
            url: self.base.clone(),
            source,
        }
    }

    /// Runs any operation of [`ops`]; errors carry the server's `extensions.code`.
    pub async fn execute<Q: GraphQLQuery>(
        &self,
        variables: Q::Variables,
    ) -> Result<Q::ResponseData> {
        let body: QueryBody<Q::Variables> = Q::build_query(variables);
        let request = self
            .authorized(
                self.http
                    .post(self.endpoint("/graphql"))
                    .timeout(REQUEST_TIMEOUT),
            )
            .json(&body);
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        let parsed: graphql_client::Response<Q::ResponseData> = match serde_json::from_str(&text) {
            Ok(parsed) => parsed,
            Err(_) => return Err(http_error(status, &text)),
        };
        if let Some(first) = parsed.errors.as_ref().and_then(|errors| errors.first()) {
            let code = first
                .extensions
                .as_ref()
                .and_then(|ext| ext.get("code"))
                .and_then(|code| code.as_str())
                .map(ErrorCode::parse)
                .unwrap_or_else(|| ErrorCode::from_status(status));
            return Err(Error::Api {
                code,
                message: first.message.clone(),
                status: Some(status).filter(|s| *s != 200),
            });
        }
        parsed.data.ok_or_else(|| {
            if status != 200 {
                http_error(status, &text)
            } else {
                Error::Protocol(format!(
                    "a GraphQL answer without data or errors: {}",
                    truncate(&text, 300)
                ))
            }
        })
    }

    // -----------------------------------------------------------------------------------------
    // Users and projects

    /// The caller, with the projects they belong to.
    pub async fn me(&self) -> Result<ops::me::MeMe> {
        Ok(self.execute::<ops::Me>(ops::me::Variables).await?.me)
    }

    /// A project by name; `None` if it does not exist.
    pub async fn project(&self, name: &str) -> Result<Option<ops::get_project::GetProjectProject>> {
        let vars = ops::get_project::Variables { name: name.into() };
        Ok(self.execute::<ops::GetProject>(vars).await?.project)
    }

    pub async fn create_project(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<ops::create_project::CreateProjectCreateProject> {
        let vars = ops::create_project::Variables {
            name: name.into(),
            description: description.map(Into::into),
        };
        Ok(self
            .execute::<ops::CreateProject>(vars)
            .await?
            .create_project)
    }

    pub async fn add_member(
        &self,
        project: &str,
        email: &str,
        role: Role,
        groups: &[String],
    ) -> Result<ops::add_member::AddMemberAddMember> {
        let vars = ops::add_member::Variables {
            project: project.into(),
            email: email.into(),
            role,
            groups: opt_vec(groups),
        };
        Ok(self.execute::<ops::AddMember>(vars).await?.add_member)
    }

    // -----------------------------------------------------------------------------------------
    // Datasets and code

    pub async fn dataset(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ops::get_dataset::GetDatasetDataset>> {
        let vars = ops::get_dataset::Variables {
            project: project.into(),
            name: name.into(),
        };
        Ok(self.execute::<ops::GetDataset>(vars).await?.dataset)
    }

    pub async fn create_dataset(
        &self,
        project: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<ops::create_dataset::CreateDatasetCreateDataset> {
        let vars = ops::create_dataset::Variables {
            project: project.into(),
            name: name.into(),
            description: description.map(Into::into),
        };
        Ok(self
            .execute::<ops::CreateDataset>(vars)
            .await?
            .create_dataset)
    }

    pub async fn register_dataset_version(
        &self,
        project: &str,
        dataset: &str,
        version: &NewDatasetVersion,
    ) -> Result<DatasetVersion> {
        let vars = ops::register_dataset_version::Variables {
            project: project.into(),
            dataset: dataset.into(),
            uri: version.uri.clone(),
            sha256: version.sha256.clone(),
            size_bytes: version.size_bytes,
            tags: opt_vec(&version.tags),
            derived_from: opt_vec(&version.derived_from),
        };
        recast(
            self.execute::<ops::RegisterDatasetVersion>(vars)
                .await?
                .register_dataset_version,
        )
    }

    pub async fn register_code_commit(
        &self,
        commit: &NewCodeCommit,
    ) -> Result<ops::register_code_commit::RegisterCodeCommitRegisterCodeCommit> {
        let vars = ops::register_code_commit::Variables {
            repository: commit.repository.clone(),
            commit: commit.commit.clone(),
            branch: commit.branch.clone(),
            dirty: commit.dirty,
            author: commit.author.clone(),
            message: commit.message.clone(),
        };
        Ok(self
            .execute::<ops::RegisterCodeCommit>(vars)
            .await?
            .register_code_commit)
    }

    // -----------------------------------------------------------------------------------------
    // Runs

    /// A run by id; `None` if there is none (or it is not yours to see).
    pub async fn run(&self, id: &str) -> Result<Option<Run>> {
        let data = self
            .execute::<ops::GetRun>(ops::get_run::Variables { id: id.into() })
            .await?;
        Ok(data.run)
    }

    /// A run's metric history (all keys, or one); `None` if there is no such run. The server
    /// answers at most [`METRIC_PAGE`] points per request; this reads page after page.
    pub async fn run_metrics(&self, id: &str, key: Option<&str>) -> Result<Option<Vec<Metric>>> {
        let mut points = Vec::new();
        loop {
            let vars = ops::run_metrics::Variables {
                id: id.into(),
                key: key.map(Into::into),
                metrics_first: Some(METRIC_PAGE),
                metrics_offset: Some(points.len() as i64),
            };
            let Some(run) = self.execute::<ops::RunMetrics>(vars).await?.run else {
                return Ok(None);
            };
            let full = run.metrics.len() as i64 == METRIC_PAGE;
            points.extend(run.metrics);
            if !full {
                return Ok(Some(points));
            }
        }
    }

    /// One page of a project's runs, newest first; `None` if there is no such project.
    pub async fn runs(
        &self,
        project: &str,
        first: Option<i64>,
        after: Option<&str>,
    ) -> Result<Option<RunsPage>> {
        let vars = ops::list_runs::Variables {
            project: project.into(),
            first,
            after: after.map(Into::into),
        };
        Ok(self
            .execute::<ops::ListRuns>(vars)
            .await?
            .project
            .map(|p| p.runs))
    }

    /// One page of the runs matching `filter` (MLflow's search syntax, e.g. `metrics.auc > 0.9
    /// and params.depth = '6'`) in `projects` (all readable ones when empty), ordered by
    /// `order_by` keys (`metrics.auc`, with `true` for descending), after the cursor `after`.
    pub async fn search_runs(
        &self,
        projects: &[String],
        filter: Option<&str>,
        order_by: &[(String, bool)],
        first: Option<i64>,
        after: Option<&str>,
    ) -> Result<ops::search_runs::SearchRunsSearchRuns> {
        let vars = ops::search_runs::Variables {
            search_projects: opt_vec(projects),
            filter: filter.map(Into::into),
            order_by: Some(
                order_by
                    .iter()
                    .map(|(key, descending)| ops::search_runs::RunOrder {
                        key: key.clone(),
                        descending: *descending,
                    })
                    .collect(),
            ),
            search_first: first,
            search_after: after.map(Into::into),
        };
        Ok(self.execute::<ops::SearchRuns>(vars).await?.search_runs)
    }

    pub async fn start_run(&self, project: &str, run: &NewRun) -> Result<Run> {
        let vars = ops::start_run::Variables {
            project: project.into(),
            name: run.name.clone(),
            code_commit_id: run.code_commit_id.clone(),
            inputs: opt_vec(&run.inputs),
            tags: run.tags.clone(),
        };
        recast(self.execute::<ops::StartRun>(vars).await?.start_run)
    }

    /// Sets params (a param never changes once set: the same value again is a no-op).
    pub async fn log_params(
        &self,
        run_id: &str,
        params: &[(String, String)],
    ) -> Result<ops::log_params::LogParamsLogParams> {
        let vars = ops::log_params::Variables {
            run_id: run_id.into(),
            params: params
                .iter()
                .map(|(key, value)| ops::log_params::ParamInput {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        Ok(self.execute::<ops::LogParams>(vars).await?.log_params)
    }

    /// Logs metrics now, in calls of at most 1,000; answers how many the server stored. For a
    /// training loop use [`RunLogger`](crate::RunLogger), which batches in the background.
    pub async fn log_metrics(&self, run_id: &str, metrics: &[MetricPoint]) -> Result<i64> {
        let mut stored = 0;
        for chunk in metrics.chunks(MAX_METRICS_PER_CALL) {
            let vars = ops::log_metrics::Variables {
                run_id: run_id.into(),
                metrics: chunk
                    .iter()
                    .map(|m| ops::log_metrics::MetricInput {
                        key: m.key.clone(),
                        value: m.value,
                        step: m.step,
                        timestamp: m.timestamp.clone(),
                    })
                    .collect(),
            };
            stored += self.execute::<ops::LogMetrics>(vars).await?.log_metrics;
        }
        Ok(stored)
    }

    pub async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
    ) -> Result<ops::finish_run::FinishRunFinishRun> {
        let vars = ops::finish_run::Variables {
            run_id: run_id.into(),
            status,
        };
        Ok(self.execute::<ops::FinishRun>(vars).await?.finish_run)
    }

    // -----------------------------------------------------------------------------------------
    // Models

    pub async fn model(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ops::get_model::GetModelModel>> {
        let vars = ops::get_model::Variables {
            project: project.into(),
            name: name.into(),
        };
        Ok(self.execute::<ops::GetModel>(vars).await?.model)
    }

    pub async fn model_version(
        &self,
        project: &str,
        model: &str,
        version: i64,
    ) -> Result<Option<ModelVersion>> {
        let vars = ops::get_model_version::Variables {
            project: project.into(),
            model: model.into(),
            version,
        };
        Ok(self
            .execute::<ops::GetModelVersion>(vars)
            .await?
            .model_version)
    }

    pub async fn create_model(
        &self,
        project: &str,
        name: &str,
        options: &NewModel,
    ) -> Result<ops::create_model::CreateModelCreateModel> {
        let vars = ops::create_model::Variables {
            project: project.into(),
            name: name.into(),
            description: options.description.clone(),
            primary_metric: options.primary_metric.clone(),
            higher_is_better: options.higher_is_better,
        };
        Ok(self.execute::<ops::CreateModel>(vars).await?.create_model)
    }

    /// Registers the next version of a model from a run's files at or under `artifact_path`.
    pub async fn register_model_version(
        &self,
        project: &str,
        model: &str,
        run_id: &str,
        artifact_path: Option<&str>,
        description: Option<&str>,
    ) -> Result<ModelVersion> {
        let vars = ops::register_model_version::Variables {
            project: project.into(),
            model: model.into(),
            run_id: run_id.into(),
            artifact_path: artifact_path.map(Into::into),
            description: description.map(Into::into),
        };
        recast(
            self.execute::<ops::RegisterModelVersion>(vars)
                .await?
                .register_model_version,
        )
    }

    // -----------------------------------------------------------------------------------------
    // Lineage

    /// Nodes and edges within `depth` steps (server default 3, at most 50).
    pub async fn lineage(
        &self,
        node: &NodeRef,
        direction: LineageDirection,
        depth: Option<i64>,
    ) -> Result<LineageGraph> {
        let vars = ops::lineage::Variables {
            node: ops::lineage::NodeRef {
                kind: node.kind,
                id: node.id.clone(),
            },
            direction,
            depth,
        };
        Ok(self.execute::<ops::Lineage>(vars).await?.lineage)
    }

    /// Records that `from` depends on `to`; CONFLICT when it would close a cycle.
    pub async fn link_lineage(
        &self,
        from: &NodeRef,
        to: &NodeRef,
        relation: &str,
    ) -> Result<ops::link_lineage::LinkLineageLinkLineage> {
        let vars = ops::link_lineage::Variables {
            from: ops::link_lineage::NodeRef {
                kind: from.kind,
                id: from.id.clone(),
            },
            to: ops::link_lineage::NodeRef {
                kind: to.kind,
                id: to.id.clone(),
            },
            relation: relation.into(),
        };
        Ok(self.execute::<ops::LinkLineage>(vars).await?.link_lineage)
    }

    // -----------------------------------------------------------------------------------------
    // Promotions

    pub async fn promotion(&self, id: &str) -> Result<Option<Promotion>> {
        Ok(self
            .execute::<ops::GetPromotion>(ops::get_promotion::Variables { id: id.into() })
            .await?
            .promotion)
    }

    /// One page of promotions, newest first.
    pub async fn promotions(&self, filter: &PromotionFilter) -> Result<PromotionPage> {
        let vars = ops::list_promotions::Variables {
            project: filter.project.clone(),
            status: filter.status,
            first: filter.first,
            after: filter.after.clone(),
        };
        let page = self.execute::<ops::ListPromotions>(vars).await?.promotions;
        Ok(PromotionPage {
            has_next_page: page.page_info.has_next_page,
            end_cursor: page.page_info.end_cursor,
            promotions: page
                .edges
                .into_iter()
                .map(|e| recast(e.node))
                .collect::<Result<_>>()?,
        })
    }

    /// What the policies would decide, without requesting anything.
    pub async fn promotion_dry_run(
        &self,
        model_version_id: &str,
        stage: &str,
    ) -> Result<ops::promotion_dry_run::PromotionDryRunPromotionDryRun> {
        let vars = ops::promotion_dry_run::Variables {
            model_version_id: model_version_id.into(),
            stage: stage.into(),
        };
        Ok(self
            .execute::<ops::PromotionDryRun>(vars)
            .await?
            .promotion_dry_run)
    }

    /// Asks to move a model version to a stage: DENIED (reasons in `policyResult.deny`), APPLIED
    /// at once, or PENDING until approvers decide.
    pub async fn request_promotion(
        &self,
        model_version_id: &str,
        stage: &str,
        comment: Option<&str>,
    ) -> Result<Promotion> {
        let vars = ops::request_promotion::Variables {
            model_version_id: model_version_id.into(),
            stage: stage.into(),
            comment: comment.map(Into::into),
        };
        recast(
            self.execute::<ops::RequestPromotion>(vars)
                .await?
                .request_promotion,
        )
    }

    pub async fn approve_promotion(&self, id: &str, comment: Option<&str>) -> Result<Promotion> {
        let vars = ops::approve_promotion::Variables {
            id: id.into(),
            comment: comment.map(Into::into),
        };
        recast(
            self.execute::<ops::ApprovePromotion>(vars)
                .await?
                .approve_promotion,
        )
    }

    pub async fn reject_promotion(&self, id: &str, comment: &str) -> Result<Promotion> {
        let vars = ops::reject_promotion::Variables {
            id: id.into(),
            comment: comment.into(),
        };
        recast(
            self.execute::<ops::RejectPromotion>(vars)
                .await?
                .reject_promotion,
        )
    }

    pub async fn cancel_promotion(&self, id: &str) -> Result<Promotion> {
        let vars = ops::cancel_promotion::Variables { id: id.into() };
        recast(
            self.execute::<ops::CancelPromotion>(vars)
                .await?
                .cancel_promotion,
        )
    }

    // -----------------------------------------------------------------------------------------
    // Audit

    /// One page of the audit log in ascending `seq` (with `project`: that project's entries;
    /// without: all, for server admins).
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<AuditLogPage> {
        let vars = ops::audit_log::Variables {
            project: filter.project.clone(),
            subject_id: filter.subject_id.clone(),
            action: filter.action.clone(),
            first: filter.first,
            after: filter.after.clone(),
        };
        Ok(self.execute::<ops::AuditLog>(vars).await?.audit_log)
    }

    // -----------------------------------------------------------------------------------------
    // Artifacts: the GraphQL half (the transfers are in `transfer.rs`)

    pub async fn create_artifact_upload(
        &self,
        owner: &crate::Owner,
        path: &str,
        sha256: &str,
        size: u64,
    ) -> Result<ops::create_artifact_upload::CreateArtifactUploadCreateArtifactUpload> {
        let vars = ops::create_artifact_upload::Variables {
            owner_kind: owner.kind(),
            owner_id: owner.id().into(),
            path: path.into(),
            sha256: sha256.into(),
            size_bytes: i64::try_from(size)
                .map_err(|_| Error::Invalid("the file is too large".into()))?,
        };
        Ok(self
            .execute::<ops::CreateArtifactUpload>(vars)
            .await?
            .create_artifact_upload)
    }

    pub async fn complete_artifact_upload(
        &self,
        upload_id: &str,
        parts: &[(i64, String)],
    ) -> Result<crate::Artifact> {
        let vars = ops::complete_artifact_upload::Variables {
            upload_id: upload_id.into(),
            parts: parts
                .iter()
                .map(
                    |(n, etag)| ops::complete_artifact_upload::CompletedPartInput {
                        part_number: *n,
                        etag: etag.clone(),
                    },
                )
                .collect(),
        };
        let file = self
            .execute::<ops::CompleteArtifactUpload>(vars)
            .await?
            .complete_artifact_upload;
        Ok(crate::Artifact {
            path: file.path,
            sha256: file.sha256,
            size: file.size,
        })
    }

    /// A URL that downloads one file without a token, valid for an hour.
    pub async fn artifact_download_url(&self, owner: &crate::Owner, path: &str) -> Result<String> {
        let vars = ops::artifact_download_url::Variables {
            owner_kind: owner.kind(),
            owner_id: owner.id().into(),
            path: path.into(),
        };
        Ok(self
            .execute::<ops::ArtifactDownloadUrl>(vars)
            .await?
            .artifact_download_url)
    }
}

/// An error from a non-GraphQL answer: the server's `{"error": {"code", "message"}}` if present,
/// else the status.
pub(crate) fn http_error(status: u16, body: &str) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(b) => Error::Api {
            code: ErrorCode::parse(&b.error.code),
            message: b.error.message,
            status: Some(status),
        },
        Err(_) => Error::Api {
            code: ErrorCode::from_status(status),
            message: if body.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", truncate(body.trim(), 300))
            },
            status: Some(status),
        },
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
