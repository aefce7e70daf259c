//! Read authorization by construction.
//!
//! Every GraphQL node that belongs to a project holds a [`Readable`], and only [`Access`] builds
//! one: after checking the caller's role in the value's project, or by deriving it from another
//! `Readable` of the same project (a dataset's versions, a run's files). So a field that reaches a
//! value of another project (a run's inputs, a member's other memberships, a promotion's policy
//! input) cannot hand it out without the check; forgetting it does not compile.
//!
//! A project the caller may not read answers exactly like one that does not exist: no existence
//! oracle. Roles are looked up once per project per request and cached in the `Access`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Mutex;

use crate::actor::Actor;
use crate::db::DbPool;
use crate::error::{Error, Result};
use crate::ids::ProjectId;
use crate::projects::{self, Role};

/// A value that names the project it belongs to.
pub trait InProject {
    fn project_id(&self) -> ProjectId;
}

/// A value that belongs to a `P` (a version to its dataset, a file to its run): it is in the
/// parent's project.
pub trait BelongsTo<P> {
    fn belongs_to(&self, parent: &P) -> bool;
}

/// Proof that the caller may read `T`: it can only be built by [`Access`] or derived from
/// another `Readable` of the same project.
#[derive(Debug, Clone)]
pub struct Readable<T> {
    value: T,
    project_id: ProjectId,
    role: Role,
}

impl<T> Readable<T> {
    /// The project the value belongs to.
    pub fn project_id(&self) -> ProjectId {
        self.project_id
    }

    /// The caller's role in that project.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A value that belongs to this one (hence to its project). A row that does not belong is a
    /// bug in the caller's query, never shown.
    pub fn child<C: BelongsTo<T>>(&self, child: C) -> Result<Readable<C>> {
        if !child.belongs_to(&self.value) {
            return Err(Error::Internal(anyhow::anyhow!(
                "a child row does not belong to its parent"
            )));
        }
        Ok(Readable {
            value: child,
            project_id: self.project_id,
            role: self.role,
        })
    }

    /// Several children at once (see [`Readable::child`]).
    pub fn children<C: BelongsTo<T>>(&self, children: Vec<C>) -> Result<Vec<Readable<C>>> {
        children.into_iter().map(|c| self.child(c)).collect()
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Readable<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// One request's caller and what it may read. Cheap to ask repeatedly: roles are cached.
pub struct Access {
    actor: Actor,
    pool: DbPool,
    /// Project id → the caller's role there (None: not a member). Filled per project on demand.
    roles: Mutex<HashMap<ProjectId, Option<Role>>>,
}

impl Access {
    pub fn new(actor: Actor, pool: DbPool) -> Self {
        Access {
            actor,
            pool,
            roles: Mutex::new(HashMap::new()),
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The caller's role in each of `project_ids` (absent: none), from the cache or one query.
    async fn roles_in(
        &self,
        project_ids: &[ProjectId],
    ) -> Result<HashMap<ProjectId, Option<Role>>> {
        let missing: Vec<ProjectId> = {
            let cache = self.roles.lock().expect("roles cache poisoned");
            let mut missing: Vec<ProjectId> = project_ids
                .iter()
                .filter(|id| !cache.contains_key(id))
                .copied()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if !missing.is_empty() {
            let mut conn = self.pool.get().await?;
            let found = projects::roles_in(&mut conn, &self.actor, &missing).await?;
            let mut cache = self.roles.lock().expect("roles cache poisoned");
            for id in missing {
                cache.insert(id, found.get(&id).copied());
            }
        }
        let cache = self.roles.lock().expect("roles cache poisoned");
        Ok(project_ids
            .iter()
            .map(|id| (*id, cache.get(id).copied().flatten()))
            .collect())
    }

    /// The value, if the caller may read its project; otherwise NOT_FOUND, exactly as if it did
    /// not exist.
    pub async fn readable<T: InProject>(&self, value: T) -> Result<Readable<T>> {
        self.readable_opt(value)
            .await?
            .ok_or_else(|| Error::not_found("not found"))
    }

    /// The value if the caller may read it, else None.
    pub async fn readable_opt<T: InProject>(&self, value: T) -> Result<Option<Readable<T>>> {
        Ok(self.filter(vec![value]).await?.pop())
    }

    /// The values the caller may read, in their order; the others are left out silently.
    pub async fn filter<T: InProject>(&self, values: Vec<T>) -> Result<Vec<Readable<T>>> {
        let ids: Vec<ProjectId> = values.iter().map(InProject::project_id).collect();
        let roles = self.roles_in(&ids).await?;
        Ok(values
            .into_iter()
            .filter_map(|value| {
                let project_id = value.project_id();
                let role = roles.get(&project_id).copied().flatten()?;
                Some(Readable {
                    value,
                    project_id,
                    role,
                })
            })
            .collect())
    }

    /// Which of these projects the caller may read.
    pub async fn readable_projects(
        &self,
        project_ids: &[ProjectId],
    ) -> Result<std::collections::HashSet<ProjectId>> {
        Ok(self
            .roles_in(project_ids)
            .await?
            .into_iter()
            .filter_map(|(id, role)| role.map(|_| id))
            .collect())
    }
}

// Which project each kind of object belongs to: directly, or through its parent.

impl InProject for crate::projects::Project {
    fn project_id(&self) -> ProjectId {
        self.id
    }
}

impl InProject for crate::datasets::Dataset {
    fn project_id(&self) -> ProjectId {
        self.project_id
    }
}

impl InProject for crate::runs::Run {
    fn project_id(&self) -> ProjectId {
        self.project_id
    }
}

impl InProject for crate::jobs::Job {
    fn project_id(&self) -> ProjectId {
        self.project_id
    }
}

impl InProject for crate::models::Model {
    fn project_id(&self) -> ProjectId {
        self.project_id
    }
}

impl InProject for crate::promotions::Promotion {
    fn project_id(&self) -> ProjectId {
        self.project_id
    }
}

impl BelongsTo<crate::datasets::Dataset> for crate::datasets::DatasetVersion {
    fn belongs_to(&self, dataset: &crate::datasets::Dataset) -> bool {
        self.dataset_id == dataset.id
    }
}

impl BelongsTo<crate::models::Model> for crate::models::ModelVersion {
    fn belongs_to(&self, model: &crate::models::Model) -> bool {
        self.model_id == model.id
    }
}

impl BelongsTo<crate::projects::Project> for crate::stages::Stage {
    fn belongs_to(&self, project: &crate::projects::Project) -> bool {
        self.project_id == project.id
    }
}

impl BelongsTo<crate::projects::Project> for crate::projects::Membership {
    fn belongs_to(&self, project: &crate::projects::Project) -> bool {
        self.project_id == project.id
    }
}
