//! One DataLoader, keyed by type: a list field batches its rows' lookups into one query.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;

use crate::artifacts::{self, ArtifactFile};
use crate::auth::{self, User};
use crate::code::{self, CodeCommit};
use crate::datasets::{self, Dataset, DatasetVersion};
use crate::db::{DbPool, VersionRange};
use crate::ids::{
    CodeCommitId, DatasetId, DatasetVersionId, ModelId, ModelVersionId, ProjectId, PromotionId,
    RunId, UserId,
};
use crate::lineage;
use crate::models::{self, Model, ModelVersion};
use crate::projects::{self, Project};
use crate::promotions::approvals::{self, Approval};
use crate::recalls::{self, Recall};
use crate::runs::{self, Param, Run};

use super::gql_error;

pub struct DbLoader {
    pub pool: DbPool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectById(pub ProjectId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatasetById(pub DatasetId);
/// One page of a dataset's versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionsOfDataset(pub DatasetId, pub VersionRange);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatasetVersionById(pub DatasetVersionId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeCommitById(pub CodeCommitId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunById(pub RunId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamsOfRun(pub RunId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LatestMetricsOfRun(pub RunId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputsOfRun(pub RunId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelById(pub ModelId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactsOfRun(pub RunId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserById(pub UserId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelVersionById(pub ModelVersionId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApprovalsOfPromotion(pub PromotionId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilesOfModelVersion(pub ModelVersionId);
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AliasesOfVersion(pub ModelVersionId);
/// One page of a model's versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionsOfModel(pub ModelId, pub VersionRange);
/// The dataset versions a dataset version was derived from (its `derived_from` edges).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParentsOfDatasetVersion(pub DatasetVersionId);
/// The runs that consumed a dataset version (their `consumed` edges).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumersOfDatasetVersion(pub DatasetVersionId);
/// Every recall of a dataset version, in force or lifted, oldest first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecallsOfDatasetVersion(pub DatasetVersionId);

type LoadResult<K, V> = Result<HashMap<K, V>, Arc<async_graphql::Error>>;

/// The ids the keys name.
fn raw<K: Copy, I>(keys: &[K], id: impl Fn(K) -> I) -> Vec<I> {
    keys.iter().map(|k| id(*k)).collect()
}

impl DbLoader {
    async fn conn(
        &self,
    ) -> Result<
        diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>,
        Arc<async_graphql::Error>,
    > {
        self.pool
            .get()
            .await
            .map_err(|e| Arc::new(gql_error(e.into())))
    }
}

/// Keys grouped by the version range they ask for.
fn by_range<K, I>(
    keys: &[K],
    split: impl Fn(&K) -> (VersionRange, I),
) -> HashMap<VersionRange, Vec<I>> {
    let mut groups: HashMap<VersionRange, Vec<I>> = HashMap::new();
    for key in keys {
        let (range, id) = split(key);
        groups.entry(range).or_default().push(id);
    }
    groups
}

fn fail(err: crate::error::Error) -> Arc<async_graphql::Error> {
    Arc::new(gql_error(err))
}

/// Groups rows under their key.
fn group<K: std::hash::Hash + Eq, V>(rows: Vec<V>, key: impl Fn(&V) -> K) -> HashMap<K, Vec<V>> {
    let mut map: HashMap<K, Vec<V>> = HashMap::new();
    for row in rows {
        map.entry(key(&row)).or_default().push(row);
    }
    map
}

macro_rules! by_id_loader {
    ($key:ty, $value:ty, $fetch:path) => {
        impl Loader<$key> for DbLoader {
            type Value = $value;
            type Error = Arc<async_graphql::Error>;

            async fn load(&self, keys: &[$key]) -> LoadResult<$key, $value> {
                let mut conn = self.conn().await?;
                let rows = $fetch(&mut conn, &raw(keys, |k| k.0)).await.map_err(fail)?;
                Ok(rows
                    .into_iter()
                    .map(|row| (<$key>::from_row(&row), row))
                    .collect())
            }
        }
    };
}

trait FromRow<V> {
    fn from_row(row: &V) -> Self;
}

impl FromRow<Project> for ProjectById {
    fn from_row(row: &Project) -> Self {
        ProjectById(row.id)
    }
}
impl FromRow<Dataset> for DatasetById {
    fn from_row(row: &Dataset) -> Self {
        DatasetById(row.id)
    }
}
impl FromRow<DatasetVersion> for DatasetVersionById {
    fn from_row(row: &DatasetVersion) -> Self {
        DatasetVersionById(row.id)
    }
}
impl FromRow<CodeCommit> for CodeCommitById {
    fn from_row(row: &CodeCommit) -> Self {
        CodeCommitById(row.id)
    }
}
impl FromRow<Run> for RunById {
    fn from_row(row: &Run) -> Self {
        RunById(row.id)
    }
}
impl FromRow<Model> for ModelById {
    fn from_row(row: &Model) -> Self {
        ModelById(row.id)
    }
}

by_id_loader!(ProjectById, Project, projects::by_ids);
by_id_loader!(DatasetById, Dataset, datasets::by_ids);
by_id_loader!(DatasetVersionById, DatasetVersion, datasets::versions_by_id);
by_id_loader!(CodeCommitById, CodeCommit, code::by_ids);
by_id_loader!(RunById, Run, runs::by_ids);
by_id_loader!(ModelById, Model, models::by_ids);
by_id_loader!(UserById, User, auth::users_by_ids);
by_id_loader!(ModelVersionById, ModelVersion, models::versions_by_id);

impl FromRow<User> for UserById {
    fn from_row(row: &User) -> Self {
        UserById(row.id)
    }
}
impl FromRow<ModelVersion> for ModelVersionById {
    fn from_row(row: &ModelVersion) -> Self {
        ModelVersionById(row.id)
    }
}

impl Loader<ApprovalsOfPromotion> for DbLoader {
    type Value = Vec<(Approval, User)>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[ApprovalsOfPromotion],
    ) -> LoadResult<ApprovalsOfPromotion, Vec<(Approval, User)>> {
        let mut conn = self.conn().await?;
        let rows = approvals::of_promotions(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        Ok(group(rows, |(a, _)| ApprovalsOfPromotion(a.promotion_id)))
    }
}

impl Loader<VersionsOfDataset> for DbLoader {
    type Value = Vec<DatasetVersion>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[VersionsOfDataset],
    ) -> LoadResult<VersionsOfDataset, Vec<DatasetVersion>> {
        let mut conn = self.conn().await?;
        let mut pages = HashMap::new();
        // One query per distinct range: in practice every key of a batch asks for the same.
        for (range, ids) in by_range(keys, |k| (k.1, k.0)) {
            let rows = datasets::versions_of(&mut conn, &ids, range)
                .await
                .map_err(fail)?;
            pages.extend(group(rows, |v| VersionsOfDataset(v.dataset_id, range)));
        }
        Ok(pages)
    }
}

impl Loader<VersionsOfModel> for DbLoader {
    type Value = Vec<ModelVersion>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[VersionsOfModel],
    ) -> LoadResult<VersionsOfModel, Vec<ModelVersion>> {
        let mut conn = self.conn().await?;
        let mut pages = HashMap::new();
        for (range, ids) in by_range(keys, |k| (k.1, k.0)) {
            let rows = models::versions_of(&mut conn, &ids, range)
                .await
                .map_err(fail)?;
            pages.extend(group(rows, |v| VersionsOfModel(v.model_id, range)));
        }
        Ok(pages)
    }
}

impl Loader<ParamsOfRun> for DbLoader {
    type Value = Vec<Param>;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[ParamsOfRun]) -> LoadResult<ParamsOfRun, Vec<Param>> {
        let mut conn = self.conn().await?;
        let rows = runs::params_of(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        Ok(group(rows, |p| ParamsOfRun(p.run_id)))
    }
}

impl Loader<LatestMetricsOfRun> for DbLoader {
    type Value = Vec<runs::Metric>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[LatestMetricsOfRun],
    ) -> LoadResult<LatestMetricsOfRun, Vec<runs::Metric>> {
        let mut conn = self.conn().await?;
        let rows = runs::last_metrics(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        Ok(group(rows, |m| LatestMetricsOfRun(m.run_id)))
    }
}

impl Loader<AliasesOfVersion> for DbLoader {
    type Value = Vec<String>;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[AliasesOfVersion]) -> LoadResult<AliasesOfVersion, Vec<String>> {
        let mut conn = self.conn().await?;
        let found = crate::labels::aliases_of(&mut conn, raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        Ok(found
            .into_iter()
            .map(|(id, aliases)| (AliasesOfVersion(id), aliases))
            .collect())
    }
}

impl Loader<InputsOfRun> for DbLoader {
    type Value = Vec<DatasetVersion>;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[InputsOfRun]) -> LoadResult<InputsOfRun, Vec<DatasetVersion>> {
        let mut conn = self.conn().await?;
        let found = versions_along(&mut conn, &raw(keys, |k| k.0), "consumed").await?;
        Ok(found
            .into_iter()
            .map(|(run, list)| (InputsOfRun(run), list))
            .collect())
    }
}

/// The dataset versions that `from` nodes point at along `relation` edges, per node, in edge
/// order (versions since deleted are left out).
async fn versions_along<F: lineage::NodeId + Ord + Copy>(
    conn: &mut crate::db::Conn,
    from: &[F],
    relation: &str,
) -> Result<Vec<(F, Vec<DatasetVersion>)>, Arc<async_graphql::Error>> {
    let edges: std::collections::BTreeMap<F, Vec<DatasetVersionId>> =
        lineage::targets_of(conn, from, relation)
            .await
            .map_err(fail)?;
    let ids: Vec<DatasetVersionId> = edges.values().flatten().copied().collect();
    let versions: HashMap<DatasetVersionId, DatasetVersion> = datasets::versions_by_id(conn, &ids)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|v| (v.id, v))
        .collect();
    Ok(edges
        .into_iter()
        .map(|(node, targets)| {
            let list = targets
                .iter()
                .filter_map(|id| versions.get(id).cloned())
                .collect();
            (node, list)
        })
        .collect())
}

impl Loader<ParentsOfDatasetVersion> for DbLoader {
    type Value = Vec<DatasetVersion>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[ParentsOfDatasetVersion],
    ) -> LoadResult<ParentsOfDatasetVersion, Vec<DatasetVersion>> {
        let mut conn = self.conn().await?;
        let found = versions_along(&mut conn, &raw(keys, |k| k.0), "derived_from").await?;
        Ok(found
            .into_iter()
            .map(|(child, parents)| (ParentsOfDatasetVersion(child), parents))
            .collect())
    }
}

impl Loader<RecallsOfDatasetVersion> for DbLoader {
    type Value = Vec<Recall>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[RecallsOfDatasetVersion],
    ) -> LoadResult<RecallsOfDatasetVersion, Vec<Recall>> {
        let mut conn = self.conn().await?;
        let recalls = recalls::of_versions(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        let mut by_version: HashMap<RecallsOfDatasetVersion, Vec<Recall>> = HashMap::new();
        for recall in recalls {
            by_version
                .entry(RecallsOfDatasetVersion(recall.dataset_version_id))
                .or_default()
                .push(recall);
        }
        Ok(by_version)
    }
}

impl Loader<ConsumersOfDatasetVersion> for DbLoader {
    type Value = Vec<Run>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[ConsumersOfDatasetVersion],
    ) -> LoadResult<ConsumersOfDatasetVersion, Vec<Run>> {
        let mut conn = self.conn().await?;
        let edges: std::collections::BTreeMap<DatasetVersionId, Vec<RunId>> =
            lineage::sources_of(&mut conn, &raw(keys, |k| k.0), "consumed")
                .await
                .map_err(fail)?;
        let ids: Vec<RunId> = edges.values().flatten().copied().collect();
        let runs: HashMap<RunId, Run> = runs::by_ids(&mut conn, &ids)
            .await
            .map_err(fail)?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        Ok(edges
            .into_iter()
            .map(|(version, consumers)| {
                let list = consumers
                    .iter()
                    .filter_map(|id| runs.get(id).cloned())
                    .collect();
                (ConsumersOfDatasetVersion(version), list)
            })
            .collect())
    }
}

impl Loader<ArtifactsOfRun> for DbLoader {
    type Value = Vec<ArtifactFile>;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[ArtifactsOfRun]) -> LoadResult<ArtifactsOfRun, Vec<ArtifactFile>> {
        let mut conn = self.conn().await?;
        let rows = artifacts::of_runs(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        let grouped = group(rows, |(run, _)| ArtifactsOfRun(*run));
        Ok(grouped
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|(_, f)| f).collect()))
            .collect())
    }
}

impl Loader<FilesOfModelVersion> for DbLoader {
    type Value = Vec<ArtifactFile>;
    type Error = Arc<async_graphql::Error>;

    async fn load(
        &self,
        keys: &[FilesOfModelVersion],
    ) -> LoadResult<FilesOfModelVersion, Vec<ArtifactFile>> {
        let mut conn = self.conn().await?;
        let rows = artifacts::of_model_versions(&mut conn, &raw(keys, |k| k.0))
            .await
            .map_err(fail)?;
        let grouped = group(rows, |(mv, _)| FilesOfModelVersion(*mv));
        Ok(grouped
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|(_, f)| f).collect()))
            .collect())
    }
}

impl super::Parented for DatasetVersion {
    type ParentKey = DatasetById;
    fn parent_key(&self) -> DatasetById {
        DatasetById(self.dataset_id)
    }
}

impl super::Parented for ModelVersion {
    type ParentKey = ModelById;
    fn parent_key(&self) -> ModelById {
        ModelById(self.model_id)
    }
}

impl super::Parented for crate::stages::Stage {
    type ParentKey = ProjectById;
    fn parent_key(&self) -> ProjectById {
        ProjectById(self.project_id)
    }
}
