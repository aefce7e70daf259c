//! The SDK's names for the entities it hands out. Each is the type generated for one fragment
//! of `graphql/*.graphql` (every operation that selects that fragment answers this same type).

use serde::Serialize;

use crate::ops;

/// A run: status, params, inputs, code commit, artifacts (fragment `RunFields`).
pub type Run = ops::get_run::RunFields;
/// One metric observation of a run's history.
pub type Metric = ops::run_metrics::RunMetricsRunMetrics;
/// A page of a project's runs.
pub type RunsPage = ops::list_runs::ListRunsProjectRuns;
/// A dataset version (fragment `DatasetVersionFields`).
pub type DatasetVersion = ops::get_dataset::DatasetVersionFields;
/// A model version with its files (fragment `ModelVersionFields`).
pub type ModelVersion = ops::get_model_version::ModelVersionFields;
/// A promotion with its policy result and decisions (fragment `PromotionFields`).
pub type Promotion = ops::get_promotion::PromotionFields;
/// Nodes (the start node first) and edges of a lineage traversal.
pub type LineageGraph = ops::lineage::LineageLineage;
/// A page of the audit log.
pub type AuditLogPage = ops::audit_log::AuditLogAuditLog;

/// A page of promotions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionPage {
    pub promotions: Vec<Promotion>,
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}
