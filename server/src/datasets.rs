//! Datasets and their immutable, auto-numbered versions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{dataset_versions, datasets};
use crate::db::{Conn, Prepared, Slice, VersionRange};
use crate::error::{Error, Result};
use crate::ids::{DatasetId, DatasetVersionId, ProjectId, UserId};
use crate::lineage::{self, NodeRef};
use crate::projects::{self, Role};
use crate::validate;

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = datasets)]
pub struct Dataset {
    pub id: DatasetId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = dataset_versions)]
pub struct DatasetVersion {
    pub id: DatasetVersionId,
    pub dataset_id: DatasetId,
    pub version: i32,
    pub uri: String,
    pub sha256: String,
    pub size_bytes: Option<i64>,
    pub tags: Vec<String>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
}

pub struct NewVersion<'a> {
    pub uri: &'a str,
    pub sha256: &'a str,
    pub size_bytes: Option<i64>,
    pub tags: Vec<String>,
    pub derived_from: Vec<DatasetVersionId>,
}

pub async fn create(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    description: Option<&str>,
) -> Result<Dataset> {
    let project = projects::find_authorized(conn, actor, project_name, Role::Contributor).await?;
    validate::name("dataset name", name)?;
    let description = validate::optional_text("description", description, 10_000)?;
    if find_in_project(conn, project.id, name).await?.is_some() {
        return Err(Error::conflict(format!(
            "project `{project_name}` already has a dataset named `{name}`"
        )));
    }
    let dataset: Dataset = diesel::insert_into(datasets::table)
        .values((
            datasets::id.eq(DatasetId::generate()),
            datasets::project_id.eq(project.id),
            datasets::name.eq(name),
            datasets::description.eq(description),
        ))
        .returning(Dataset::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "dataset.create",
            project_id: Some(project.id),
            subject_kind: "dataset",
            subject_id: dataset.id.to_string(),
            before: None,
            after: Some(json!({"name": dataset.name, "description": dataset.description})),
        },
    )
    .await?;
    Ok(dataset)
}

async fn find_in_project(
    conn: &mut Conn,
    project_id: ProjectId,
    name: &str,
) -> Result<Option<Dataset>> {
    Ok(datasets::table
        .filter(datasets::project_id.eq(project_id))
        .filter(datasets::name.eq(name))
        .select(Dataset::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A dataset by project and name, for a caller holding at least `needed` in the project.
pub async fn find(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    needed: Role,
) -> Result<Dataset> {
    let project = projects::find_authorized(conn, actor, project_name, needed).await?;
    find_in_project(conn, project.id, name)
        .await?
        .ok_or_else(|| {
            Error::not_found(format!(
                "project `{project_name}` has no dataset named `{name}`"
            ))
        })
}

pub async fn register_version(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    dataset_name: &str,
    new: NewVersion<'_>,
) -> Result<DatasetVersion> {
    let sha256 = validate::sha256(new.sha256)?;
    validate::text("uri", new.uri, 4096)?;
    if new.uri.trim().is_empty() {
        return Err(Error::invalid("uri must not be empty"));
    }
    if new.size_bytes.is_some_and(|s| s < 0) {
        return Err(Error::invalid("sizeBytes must not be negative"));
    }
    let mut tags = new.tags;
    for tag in &tags {
        validate::name("tag", tag)?;
    }
    tags.sort();
    tags.dedup();
    let dataset = find(conn, actor, project_name, dataset_name, Role::Contributor).await?;
    lineage::authorize_dataset_versions(conn, actor, &new.derived_from, Role::Viewer).await?;
    // The dataset's lock (so concurrent registrations number their versions one after the
    // other) and the insert numbered after the last version, in one round trip: statements run
    // in the order sent, so the number is read under the lock.
    let lock = Prepared(
        diesel::sql_query("SELECT 1 FROM datasets WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Uuid, _>(dataset.id),
    )
    .execute(conn);
    let insert = Prepared(
        diesel::sql_query(
            "INSERT INTO dataset_versions
               (id, dataset_id, version, uri, sha256, size_bytes, tags, created_by)
             SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7
             FROM dataset_versions WHERE dataset_id = $2
             RETURNING *",
        )
        .bind::<diesel::sql_types::Uuid, _>(DatasetVersionId::generate())
        .bind::<diesel::sql_types::Uuid, _>(dataset.id)
        .bind::<diesel::sql_types::Text, _>(new.uri)
        .bind::<diesel::sql_types::Text, _>(&sha256)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>, _>(new.size_bytes)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&tags)
        .bind::<diesel::sql_types::Uuid, _>(actor.user_id()?),
    )
    .get_result::<DatasetVersion>(conn)
    .boxed(); // (not `Send` for every lifetime a transaction's closure needs, unboxed)
    let (_, version) = futures_util::future::try_join(lock, insert).await?;
    let this = NodeRef::DatasetVersion(version.id);
    for parent in &new.derived_from {
        let parent = NodeRef::DatasetVersion(*parent);
        lineage::record_new_node_edge(conn, this, parent, "derived_from").await?;
    }
    audit::record(
        conn,
        actor,
        registered(&dataset, &version, &new.derived_from),
    )
    .await?;
    crate::openlineage::emit::dataset_version_registered(conn, version.id).await?;
    Ok(version)
}

/// The audit entry of a version's registration.
fn registered(
    dataset: &Dataset,
    version: &DatasetVersion,
    derived_from: &[DatasetVersionId],
) -> Change<'static> {
    Change {
        action: "dataset_version.register",
        project_id: Some(dataset.project_id),
        subject_kind: "dataset_version",
        subject_id: version.id.to_string(),
        before: None,
        after: Some(json!({
            "dataset": dataset.name,
            "version": version.version,
            "uri": version.uri,
            "sha256": version.sha256,
            "size_bytes": version.size_bytes,
            "tags": version.tags,
            "derived_from": derived_from,
        })),
    }
}

/// A version a pipeline reported (OpenLineage), registered with others by [`record_versions`]:
/// what [`register_version`] would record, its authorization checked by the caller.
#[derive(Clone)]
pub struct Reported {
    pub id: DatasetVersionId,
    pub dataset: Dataset,
    pub uri: String,
    pub sha256: String,
    pub tags: Vec<String>,
    pub created_by: UserId,
}

/// Registers reported versions, each numbered after the last of its dataset (several of one
/// dataset in the order given), in one round trip: the datasets' locks, in id order so that two
/// such calls cannot deadlock, then one insert. Answers each version's number; a version whose
/// dataset already holds one of the same SHA-256 (recorded meanwhile) is left out, unnumbered.
/// Authorization is the caller's; the audit entries are [`Reported::change`]'s. The future
/// borrows nothing of the connection (see `run_keys::record`).
pub fn record_versions(
    conn: &mut Conn,
    reported: &[Reported],
) -> futures_util::future::BoxFuture<'static, Result<Vec<(DatasetVersionId, i32)>>> {
    if reported.is_empty() {
        return Box::pin(std::future::ready(Ok(Vec::new())));
    }
    for r in reported {
        let checked = validate::sha256(&r.sha256)
            .and_then(|_| validate::text("uri", &r.uri, 4096))
            .and_then(|()| r.tags.iter().try_for_each(|t| validate::name("tag", t)));
        if let Err(e) = checked {
            return Box::pin(std::future::ready(Err(e)));
        }
    }
    type Uuids = diesel::sql_types::Array<diesel::sql_types::Uuid>;
    type Texts = diesel::sql_types::Array<diesel::sql_types::Text>;
    let mut locked: Vec<DatasetId> = reported.iter().map(|r| r.dataset.id).collect();
    locked.sort();
    locked.dedup();
    let lock = Prepared(
        diesel::sql_query("SELECT 1 FROM datasets WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind::<Uuids, _>(locked),
    )
    .execute(conn);
    #[derive(QueryableByName)]
    struct Numbered {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: DatasetVersionId,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        version: i32,
    }
    let column = |f: fn(&Reported) -> String| reported.iter().map(f).collect::<Vec<String>>();
    // Tags as JSON arrays: an array of arrays cannot be unnested row by row.
    let tags = column(|r| {
        let mut tags = r.tags.clone();
        tags.sort();
        tags.dedup();
        json!(tags).to_string()
    });
    let insert = Prepared(
        diesel::sql_query(
            "INSERT INTO dataset_versions
               (id, dataset_id, version, uri, sha256, size_bytes, tags, created_by)
             SELECT w.id, w.dataset_id,
                    coalesce((SELECT max(v.version) FROM dataset_versions v
                              WHERE v.dataset_id = w.dataset_id), 0)
                      + row_number() OVER (PARTITION BY w.dataset_id ORDER BY w.n),
                    w.uri, w.sha256, NULL,
                    ARRAY(SELECT jsonb_array_elements_text(w.tags::jsonb)), w.created_by
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[])
                  WITH ORDINALITY AS w(id, dataset_id, uri, sha256, tags, created_by, n)
             WHERE NOT EXISTS (SELECT 1 FROM dataset_versions v
                               WHERE v.dataset_id = w.dataset_id AND v.sha256 = w.sha256)
             RETURNING id, version",
        )
        .bind::<Uuids, _>(reported.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind::<Uuids, _>(reported.iter().map(|r| r.dataset.id).collect::<Vec<_>>())
        .bind::<Texts, _>(column(|r| r.uri.clone()))
        .bind::<Texts, _>(column(|r| r.sha256.clone()))
        .bind::<Texts, _>(tags)
        .bind::<Uuids, _>(reported.iter().map(|r| r.created_by).collect::<Vec<_>>()),
    )
    .load::<Numbered>(conn)
    // (Boxed: not `Send` for every lifetime a transaction's closure needs, unboxed.)
    .boxed();
    // Polled together, the lock first: one round trip, the numbers read under the locks.
    Box::pin(async move {
        let (_, numbered) = futures_util::future::try_join(lock, insert).await?;
        Ok(numbered.into_iter().map(|n| (n.id, n.version)).collect())
    })
}

impl Reported {
    /// The audit entry [`register_version`] would have recorded, once the version's number is
    /// known.
    pub fn change(&self, number: i32) -> Change<'static> {
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        let version = DatasetVersion {
            id: self.id,
            dataset_id: self.dataset.id,
            version: number,
            uri: self.uri.clone(),
            sha256: self.sha256.clone(),
            size_bytes: None,
            tags,
            created_by: self.created_by,
            created_at: Utc::now(),
        };
        registered(&self.dataset, &version, &[])
    }
}

/// A project's datasets by name, one slice.
pub async fn list_in_project(
    conn: &mut Conn,
    project_id: ProjectId,
    slice: Slice,
) -> Result<Vec<Dataset>> {
    Ok(datasets::table
        .filter(datasets::project_id.eq(project_id))
        .order(datasets::name.asc())
        .limit(slice.limit)
        .offset(slice.offset)
        .select(Dataset::as_select())
        .load(conn)
        .await?)
}

/// The versions of many datasets, ascending, numbered in `versions` (versions are numbered
/// 1, 2, 3… without gaps, so a range of numbers is a page).
pub async fn versions_of(
    conn: &mut Conn,
    dataset_ids: &[DatasetId],
    versions: VersionRange,
) -> Result<Vec<DatasetVersion>> {
    Ok(dataset_versions::table
        .filter(dataset_versions::dataset_id.eq_any(dataset_ids))
        .filter(dataset_versions::version.gt(versions.after))
        .filter(dataset_versions::version.le(versions.last()))
        .order((
            dataset_versions::dataset_id,
            dataset_versions::version.asc(),
        ))
        .select(DatasetVersion::as_select())
        .load(conn)
        .await?)
}

pub async fn versions_by_id(
    conn: &mut Conn,
    ids: &[DatasetVersionId],
) -> Result<Vec<DatasetVersion>> {
    // One primary-key probe per id, however many (see `runs::by_ids`).
    Ok(Prepared(
        diesel::sql_query(
            "SELECT v.* FROM unnest($1::uuid[]) AS wanted(id) CROSS JOIN LATERAL \
             (SELECT * FROM dataset_versions d WHERE d.id = wanted.id OFFSET 0) v",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids),
    )
    .load(conn)
    .await?)
}

pub async fn by_ids(conn: &mut Conn, ids: &[DatasetId]) -> Result<Vec<Dataset>> {
    Ok(datasets::table
        .filter(datasets::id.eq_any(ids))
        .select(Dataset::as_select())
        .load(conn)
        .await?)
}
