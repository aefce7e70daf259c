//! MLflow's artifact API (`/api/2.0/mlflow-artifacts/artifacts/<path>`) over Custody's files.
//!
//! The client sends and fetches files under the `mlflow-artifacts:` URIs Custody hands out
//! (`wire::artifact_uri`); the first two segments of the path say whose files they are:
//!
//! - `runs/<run id>/…`: the run's files (uploaded with `crate::artifacts::upload`: streamed,
//!   SHA-256 recorded, immutable; the run folder `mlflow-models/` is reserved for logged models);
//! - `logged-models/<model id>/…`: that logged model's files, which are its run's files under
//!   `mlflow-models/<model id>/`; uploads are refused once the model is finalized;
//! - `model-versions/<version id>/…`: a registered version's files, read-only.
//!
//! Reads need VIEWER in the owner's project, uploads CONTRIBUTOR (the domain functions check;
//! an outsider gets the RESOURCE_DOES_NOT_EXIST of a missing owner). Nothing is ever deleted.
//! A listing names each entry relative to the folder listed, as MLflow's server does (the client
//! joins them back); a file's own path lists as empty.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::logged_models::{self, Status};
use super::request::{args, ok, Call, MlflowError, Reply};
use crate::actor::Actor;
use crate::artifacts::{self, ArtifactFile, Owner};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{ModelVersionId, RunId};
use crate::models;
use crate::projects::Role;
use crate::runs;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/artifacts", web::get().to(list))
        .route("/artifacts/{path:.*}", web::get().to(download))
        .route("/artifacts/{path:.*}", web::put().to(upload))
        .route("/artifacts/{path:.*}", web::delete().to(not_deletable));
}

/// Whose files an `mlflow-artifacts:` path names, and the path among them (empty: their root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    Run { run: RunId, path: String },
    LoggedModel { id: String, path: String },
    ModelVersion { id: ModelVersionId, path: String },
}

impl Location {
    /// Reads a path such as `runs/<id>/model/MLmodel` (leading and trailing slashes ignored).
    pub(super) fn parse(full: &str) -> Result<Location> {
        let full = full.trim_matches('/');
        let mut parts = full.splitn(3, '/');
        let kind = parts.next().unwrap_or_default();
        let id = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default().to_owned();
        let bad_id = || Error::invalid(format!("`{id}` is not a valid id in `{full}`"));
        match kind {
            "runs" => Ok(Location::Run {
                run: id.parse().map_err(|_| bad_id())?,
                path,
            }),
            "logged-models" if logged_models::is_model_id(id) => Ok(Location::LoggedModel {
                id: id.to_owned(),
                path,
            }),
            "logged-models" => Err(bad_id()),
            "model-versions" => Ok(Location::ModelVersion {
                id: id.parse().map_err(|_| bad_id())?,
                path,
            }),
            _ => Err(Error::invalid(format!(
                "`{full}` is not an artifact location of this server: mlflow-artifacts paths \
                 start with runs/<run id>/, logged-models/<model id>/ or \
                 model-versions/<version id>/"
            ))),
        }
    }
}

/// A path under a folder (`""`: the folder itself).
fn join(folder: &str, path: &str) -> String {
    if path.is_empty() {
        folder.to_owned()
    } else {
        format!("{folder}/{path}")
    }
}

/// One entry of a listing, as MLflow writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Entry {
    path: String,
    is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<i64>,
}

/// The entries directly in `folder` (owner-relative; `""` is the root) among the owner's files,
/// named relative to it, sorted. A folder that is a file, or that holds nothing, lists empty.
fn children<'a>(files: impl IntoIterator<Item = &'a ArtifactFile>, folder: &str) -> Vec<Entry> {
    let folder = folder.trim_matches('/');
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let mut entries: BTreeMap<&str, Entry> = BTreeMap::new();
    for file in files {
        let Some(rest) = file.path.strip_prefix(&prefix) else {
            continue;
        };
        let entry = match rest.split_once('/') {
            Some((dir, _)) => Entry {
                path: dir.to_owned(),
                is_dir: true,
                file_size: None,
            },
            None => Entry {
                path: rest.to_owned(),
                is_dir: false,
                file_size: Some(file.size),
            },
        };
        entries
            .entry(rest.split('/').next().unwrap_or(rest))
            .or_insert(entry);
    }
    entries.into_values().collect()
}

/// The files of a location's owner with the owner-relative folder the location names, the
/// caller holding VIEWER.
async fn files_at(
    conn: &mut Conn,
    actor: &Actor,
    location: &Location,
) -> Result<(Vec<ArtifactFile>, String)> {
    match location {
        Location::Run { run, path } => {
            runs::get(conn, actor, *run, Role::Viewer).await?;
            let files = artifacts::of_runs(conn, &[*run]).await?;
            Ok((files.into_iter().map(|(_, f)| f).collect(), path.clone()))
        }
        Location::LoggedModel { id, path } => {
            let model = logged_models::find(conn, actor, id, Role::Viewer).await?;
            let files = artifacts::of_runs(conn, &[model.run_id]).await?;
            let folder = join(&model.folder(), path);
            Ok((files.into_iter().map(|(_, f)| f).collect(), folder))
        }
        Location::ModelVersion { id, path } => {
            models::version_and_model_for(conn, actor, *id, Role::Viewer).await?;
            let files = artifacts::of_model_versions(conn, &[*id]).await?;
            Ok((files.into_iter().map(|(_, f)| f).collect(), path.clone()))
        }
    }
}

/// The stored file a location names, the caller holding VIEWER.
async fn file_at(conn: &mut Conn, actor: &Actor, location: &Location) -> Result<ArtifactFile> {
    let (owner, path) = match location {
        Location::Run { run, path } => (Owner::Run(*run), path.clone()),
        Location::LoggedModel { id, path } => {
            let model = logged_models::find(conn, actor, id, Role::Viewer).await?;
            (Owner::Run(model.run_id), join(&model.folder(), path))
        }
        Location::ModelVersion { id, path } => (Owner::ModelVersion(*id), path.clone()),
    };
    let file = artifacts::find(conn, actor, owner, &path).await?;
    // Answer with the name the client asked for (a logged model's file is stored deeper).
    Ok(ArtifactFile {
        path: location_path(location).to_owned(),
        ..file
    })
}

fn location_path(location: &Location) -> &str {
    match location {
        Location::Run { path, .. }
        | Location::LoggedModel { path, .. }
        | Location::ModelVersion { path, .. } => path,
    }
}

/// Where an upload to a location goes among its run's files, once the caller may write there:
/// a run's own path (not in the logged models' folder), or a PENDING logged model's folder.
async fn upload_target(
    conn: &mut Conn,
    actor: &Actor,
    location: &Location,
) -> std::result::Result<(RunId, String), MlflowError> {
    match location {
        Location::Run { run, path } => {
            let reserved = path == logged_models::FOLDER
                || path.starts_with(&format!("{}/", logged_models::FOLDER));
            if reserved {
                return Err(MlflowError::invalid(format!(
                    "`{}/` of a run holds its logged models' files: upload them to the logged \
                     model's artifact location (mlflow-artifacts:/logged-models/<model id>)",
                    logged_models::FOLDER
                )));
            }
            Ok((*run, path.clone()))
        }
        Location::LoggedModel { id, path } => {
            let model = logged_models::find(conn, actor, id, Role::Contributor).await?;
            // Checked before the bytes move; a finalize racing this upload can still let this
            // one file in (versions take the files present when they are registered).
            if model.status != Status::Pending {
                return Err(Error::conflict(format!(
                    "logged model {id} is finalized ({}): its files do not change any more",
                    model.status
                ))
                .into());
            }
            Ok((model.run_id, join(&model.folder(), path)))
        }
        Location::ModelVersion { .. } => Err(MlflowError::permission_denied(
            "a registered model version's files never change: upload to a run or a logged \
             model, then register a new version",
        )),
    }
}

/// The `<path>` of `…/mlflow-artifacts/artifacts/<path>`, percent-decoded strictly from the raw
/// request target (as `http::artifacts` does: a name that is not UTF-8 is refused, not altered).
fn request_path(http: &HttpRequest) -> Result<String> {
    let raw = http
        .uri()
        .path()
        .split_once("/mlflow-artifacts/artifacts/")
        .map(|(_, tail)| tail)
        .unwrap_or_default();
    crate::http::percent_decode(raw)
}

// ---- handlers ----

#[derive(Deserialize)]
struct ListArgs {
    path: Option<String>,
}

#[derive(Serialize)]
struct ListAnswer {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<Entry>,
}

async fn list(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: ListArgs = args(&http, &body)?;
    let location = Location::parse(a.path.as_deref().unwrap_or_default())?;
    let mut conn = call.conn().await?;
    let (files, folder) = files_at(&mut conn, &call.actor, &location).await?;
    ok(ListAnswer {
        files: children(&files, &folder),
    })
}

async fn download(call: Call, http: HttpRequest) -> Reply {
    let location = Location::parse(&request_path(&http)?)?;
    let mut conn = call.conn().await?;
    let file = file_at(&mut conn, &call.actor, &location).await?;
    drop(conn);
    crate::http::stream_file(&call.state, &http, &file, None)
        .await
        .map_err(|e| MlflowError::from(e.0))
}

async fn upload(call: Call, http: HttpRequest, payload: web::Payload) -> Reply {
    call.actor.require_writer()?;
    let location = Location::parse(&request_path(&http)?)?;
    let mut conn = call.conn().await?;
    let (run, path) = upload_target(&mut conn, &call.actor, &location).await?;
    drop(conn);
    let body = payload.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    artifacts::upload(
        &call.state.pool,
        &call.state.artifacts,
        &call.actor,
        Owner::Run(run),
        &path,
        body,
        None,
    )
    .await?;
    ok(json!({}))
}

async fn not_deletable(_call: Call) -> Reply {
    Err(MlflowError::permission_denied(
        "Custody never deletes artifacts: files are content-addressed, immutable and part of \
         the audit trail",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: i64) -> ArtifactFile {
        ArtifactFile {
            path: path.into(),
            sha256: "0".repeat(64),
            size,
        }
    }

    #[test]
    fn locations() {
        let run = "0191d3c2-7d4e-7b8a-9c1d-2e3f4a5b6c7d";
        assert_eq!(
            Location::parse(&format!("runs/{run}/model/MLmodel")).unwrap(),
            Location::Run {
                run: run.parse().unwrap(),
                path: "model/MLmodel".into()
            }
        );
        // MLflow's own run ids (32 hex digits) name the same run.
        assert_eq!(
            Location::parse(&format!("/runs/{}/", run.replace('-', ""))).unwrap(),
            Location::Run {
                run: run.parse().unwrap(),
                path: String::new()
            }
        );
        let model = "m-4a0bbc85ef18413cb372b1a79c19539e";
        assert_eq!(
            Location::parse(&format!("logged-models/{model}/MLmodel")).unwrap(),
            Location::LoggedModel {
                id: model.into(),
                path: "MLmodel".into()
            }
        );
        assert_eq!(
            Location::parse(&format!("model-versions/{run}")).unwrap(),
            Location::ModelVersion {
                id: run.parse().unwrap(),
                path: String::new()
            }
        );
        for bad in [
            "",
            "15/0d57990698b84273b43add0c13e53abb/artifacts/model",
            "runs/not-a-run/x",
            "logged-models/m-nothex/x",
            "experiments/1/x",
            "model-versions//x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listings_name_children_relative_to_the_folder() {
        let files = [
            file("model/MLmodel", 10),
            file("model/data/weights.bin", 99),
            file("model/data/extra/x", 1),
            file("notes.txt", 3),
            file("modelling.txt", 4),
        ];
        assert_eq!(
            children(&files, ""),
            [
                Entry {
                    path: "model".into(),
                    is_dir: true,
                    file_size: None
                },
                Entry {
                    path: "modelling.txt".into(),
                    is_dir: false,
                    file_size: Some(4)
                },
                Entry {
                    path: "notes.txt".into(),
                    is_dir: false,
                    file_size: Some(3)
                },
            ]
        );
        assert_eq!(
            children(&files, "model/"),
            [
                Entry {
                    path: "MLmodel".into(),
                    is_dir: false,
                    file_size: Some(10)
                },
                Entry {
                    path: "data".into(),
                    is_dir: true,
                    file_size: None
                },
            ]
        );
        // A file, or a folder that holds nothing, lists empty (as MLflow's server answers).
        assert!(children(&files, "notes.txt").is_empty());
        assert!(children(&files, "nothing").is_empty());
        assert!(children(&files, "mod").is_empty());
    }

    #[test]
    fn logged_model_paths_live_in_their_folder() {
        let model = "m-4a0bbc85ef18413cb372b1a79c19539e";
        assert_eq!(
            join(&logged_models::folder_of(model), "MLmodel"),
            format!("mlflow-models/{model}/MLmodel")
        );
        assert_eq!(
            join(&logged_models::folder_of(model), ""),
            format!("mlflow-models/{model}")
        );
    }
}
