//! Code commits: a repository and a 40-hex commit id, shared by every project.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{code_commits, memberships};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::CodeCommitId;
use crate::projects::Role;
use crate::validate;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = code_commits)]
pub struct CodeCommit {
    pub id: CodeCommitId,
    pub repository: String,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub author: Option<String>,
    pub message: Option<String>,
    pub dirty: bool,
    pub created_at: DateTime<Utc>,
}

pub struct NewCommit<'a> {
    pub repository: &'a str,
    pub commit: &'a str,
    pub branch: Option<&'a str>,
    pub author: Option<&'a str>,
    pub message: Option<&'a str>,
    pub dirty: bool,
}

/// Registers a commit, or returns the one already registered for the same repository, id and
/// dirty flag: every run from one checkout reports the same commit, so a repeat is not an error.
/// A dirty checkout is a different node from the clean commit, so its flag is never lost.
pub async fn register(conn: &mut Conn, actor: &Actor, new: NewCommit<'_>) -> Result<CodeCommit> {
    let sha = validate::commit_sha(new.commit)?;
    let repository = new.repository.trim();
    if repository.is_empty() {
        return Err(Error::invalid("repository must not be empty"));
    }
    validate::text("repository", repository, 2048)?;
    validate::optional_text("branch", new.branch, 1024)?;
    validate::optional_text("author", new.author, 1024)?;
    validate::optional_text("message", new.message, 65_536)?;
    // Commits are shared, so any contributor of some project may register one.
    if !actor.is_admin {
        let mut memberships = memberships::table
            .filter(memberships::user_id.eq(actor.user_id()?))
            .filter(memberships::role.ne(Role::Viewer))
            .into_boxed();
        if let Some(scope) = actor.project_scope {
            memberships = memberships.filter(memberships::project_id.eq(scope));
        }
        let contributor: bool = diesel::select(diesel::dsl::exists(memberships))
            .get_result(conn)
            .await?;
        if !contributor {
            return Err(Error::forbidden(
                "registering code commits needs the contributor role in some project",
            ));
        }
    }
    let existing: Option<CodeCommit> = code_commits::table
        .filter(code_commits::repository.eq(repository))
        .filter(code_commits::commit_sha.eq(&sha))
        .filter(code_commits::dirty.eq(new.dirty))
        .select(CodeCommit::as_select())
        .first(conn)
        .await
        .optional()?;
    if let Some(commit) = existing {
        return Ok(commit);
    }
    let commit: CodeCommit = diesel::insert_into(code_commits::table)
        .values((
            code_commits::id.eq(CodeCommitId::generate()),
            code_commits::repository.eq(repository),
            code_commits::commit_sha.eq(&sha),
            code_commits::branch.eq(new.branch),
            code_commits::author.eq(new.author),
            code_commits::message.eq(new.message),
            code_commits::dirty.eq(new.dirty),
        ))
        .on_conflict_do_nothing()
        .returning(CodeCommit::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::conflict("this commit was registered concurrently; retry"))?;
    audit::record(
        conn,
        actor,
        Change {
            action: "code_commit.register",
            project_id: None,
            subject_kind: "code_commit",
            subject_id: commit.id.to_string(),
            before: None,
            after: Some(json!({
                "repository": commit.repository,
                "commit": commit.commit_sha,
                "branch": commit.branch,
                "dirty": commit.dirty,
            })),
        },
    )
    .await?;
    Ok(commit)
}

pub async fn by_ids(conn: &mut Conn, ids: &[CodeCommitId]) -> Result<Vec<CodeCommit>> {
    Ok(code_commits::table
        .filter(code_commits::id.eq_any(ids))
        .select(CodeCommit::as_select())
        .load(conn)
        .await?)
}
