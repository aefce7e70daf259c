//! Jobs: the pipeline steps OpenLineage describes (an Airflow task, a Spark job, a dbt model).
//! A job is a JOB lineage node of one project, named by its OpenLineage namespace and name; each
//! of its runs is a Custody run linked to it (`run —run_of→ job`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::jobs;
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{JobId, ProjectId};
use crate::validate;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: JobId,
    pub project_id: ProjectId,
    pub namespace: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The job named `namespace`/`name`, wherever it is.
pub async fn find(conn: &mut Conn, namespace: &str, name: &str) -> Result<Option<Job>> {
    Ok(jobs::table
        .filter(jobs::namespace.eq(namespace))
        .filter(jobs::name.eq(name))
        .select(Job::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Records a new job in `project` (the caller has checked it may write there).
pub async fn create(
    conn: &mut Conn,
    actor: &Actor,
    project_id: ProjectId,
    namespace: &str,
    name: &str,
) -> Result<Job> {
    for (what, value) in [("job namespace", namespace), ("job name", name)] {
        validate::text(what, value, 1024)?;
        if value.trim().is_empty() {
            return Err(Error::invalid(format!("{what} must not be empty")));
        }
    }
    let job: Job = diesel::insert_into(jobs::table)
        .values((
            jobs::id.eq(JobId::generate()),
            jobs::project_id.eq(project_id),
            jobs::namespace.eq(namespace),
            jobs::name.eq(name),
        ))
        .on_conflict_do_nothing()
        .returning(Job::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::conflict("this job was recorded concurrently; retry"))?;
    audit::record(
        conn,
        actor,
        Change {
            action: "job.create",
            project_id: Some(project_id),
            subject_kind: "job",
            subject_id: job.id.to_string(),
            before: None,
            after: Some(json!({"namespace": job.namespace, "name": job.name})),
        },
    )
    .await?;
    Ok(job)
}

pub async fn by_ids(conn: &mut Conn, ids: &[JobId]) -> Result<Vec<Job>> {
    Ok(jobs::table
        .filter(jobs::id.eq_any(ids))
        .select(Job::as_select())
        .load(conn)
        .await?)
}
