//! MLflow's model registry over Custody's models: a registered model is a model, a model version
//! a model version (numbered the same way, produced by a run, its files fixed at registration).
//!
//! **Which project a registered-model name means.** Custody's models live in projects, MLflow's
//! names are global, so a name is read as follows:
//!
//! - `<project>~<model>` (qualified) names the model of that project. `~` separates them because
//!   the MLflow client refuses `/` in model URIs (`models:/a/b/1` does not parse) and `:` in
//!   registry names, while `~` is in no project or model name and needs no escaping in URIs,
//!   query strings or filters.
//! - `<model>` (bare) names, for a project-limited token, the model of that project; otherwise
//!   the one model of that name among the projects the caller may read (several: refused with
//!   INVALID_PARAMETER_VALUE naming the qualified forms).
//! - Creating a registered model with a bare name that names no readable model creates it in
//!   the caller's one project where they are CONTRIBUTOR or more; among several, in the one
//!   project where the caller has running runs (`log_model(…, registered_model_name=…)` runs
//!   inside a run); otherwise refused, naming the qualified form. A name that names an existing model answers RESOURCE_ALREADY_EXISTS,
//!   which the client's `register_model` reads as "go on and add a version".
//!
//! Answers carry the name as the caller wrote it; search results, which have none, carry the
//! bare name where it is unambiguous for the caller and the qualified one where it is not.
//!
//! **Versions** come from files Custody holds: `runs:/<run>/<path>`,
//! `mlflow-artifacts:/runs/<run>/<path>`, or a READY logged model (`models:/m-…`,
//! `mlflow-artifacts:/logged-models/m-…`), whose folder of its run's files is taken. They are
//! READY at once; their download URI is `mlflow-artifacts:/model-versions/<version id>`.
//!
//! **Stages and aliases go through governance.** `transition-stage` requests a promotion
//! (`Staging` → `staging`, `Production` → `production`, `Archived` → `archived`, any other
//! stage of the project by name; `None` is refused): the answer is the version as it is, which
//! has moved only if the promotion applied at once; one awaiting approval moves when approved
//! (the previous holder of the stage is then archived whatever `archive_existing_versions` says:
//! a stage holds one version). A promotion the policies deny is recorded and answered as
//! PERMISSION_DENIED with the policies' reasons. A governed alias moves the same way.
//!
//! Custody keeps every model and version: delete and rename are refused (PERMISSION_DENIED).
//! Times: a version's `last_updated_timestamp` is its creation (Custody records later changes in
//! the audit log, not on the row); a model's is its newest version's creation.

use std::collections::{BTreeSet, HashMap};

use actix_web::{web, HttpRequest};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::artifacts::Location;
use super::experiments::page_size;
use super::logged_models::{self, Status as LoggedStatus};
use super::request::{args, lenient, ok, required, Call, MlflowError, Reply};
use super::wire::{self, KeyValue};
use crate::actor::Actor;
use crate::db::schema::{
    memberships, model_versions, models as models_table, projects as projects_table, users,
};
use crate::db::{Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::{ModelId, ModelVersionId, ProjectId, RunId, TypedId, UserId};
use crate::labels::{self, AliasMove, Tagged};
use crate::models::{self, Model, ModelVersion};
use crate::projects::{self, Readable, Role};
use crate::promotions::{self, Gate, Promotion, Status as PromotionStatus};
use crate::search::filter::ValueType;
use crate::search::sql::{self, AttributeSpec, Bind, Rule, Search, Statement, Subject};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/registered-models/create", web::post().to(create_model))
        .route("/registered-models/get", web::get().to(get_model))
        .route("/registered-models/search", web::get().to(search_models))
        .route("/registered-models/search", web::post().to(search_models))
        .route("/registered-models/update", web::patch().to(update_model))
        .route("/registered-models/rename", web::post().to(not_renamable))
        .route(
            "/registered-models/delete",
            web::delete().to(model_not_deletable),
        )
        .route("/registered-models/set-tag", web::post().to(set_model_tag))
        .route(
            "/registered-models/delete-tag",
            web::delete().to(delete_model_tag),
        )
        .route(
            "/registered-models/get-latest-versions",
            web::post().to(latest_versions),
        )
        .route(
            "/registered-models/get-latest-versions",
            web::get().to(latest_versions),
        )
        .route("/registered-models/alias", web::post().to(set_alias))
        .route("/registered-models/alias", web::get().to(get_by_alias))
        .route("/registered-models/alias", web::delete().to(delete_alias))
        .route("/model-versions/create", web::post().to(create_version))
        .route("/model-versions/get", web::get().to(get_version))
        .route("/model-versions/update", web::patch().to(update_version))
        .route(
            "/model-versions/delete",
            web::delete().to(version_not_deletable),
        )
        .route("/model-versions/search", web::get().to(search_versions))
        .route("/model-versions/search", web::post().to(search_versions))
        .route(
            "/model-versions/get-download-uri",
            web::get().to(download_uri),
        )
        .route("/model-versions/set-tag", web::post().to(set_version_tag))
        .route(
            "/model-versions/delete-tag",
            web::delete().to(delete_version_tag),
        )
        .route(
            "/model-versions/transition-stage",
            web::post().to(transition_stage),
        );
}

// ---- names ----

/// Between the project and the model in a qualified registered-model name.
pub const SEPARATOR: char = '~';

/// A registered-model name as MLflow sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name<'a> {
    Qualified { project: &'a str, model: &'a str },
    Bare(&'a str),
}

impl<'a> Name<'a> {
    fn parse(name: &'a str) -> Result<Name<'a>> {
        if name.trim().is_empty() {
            return Err(Error::invalid(
                "Missing value for required parameter 'name'",
            ));
        }
        match name.split_once(SEPARATOR) {
            None => Ok(Name::Bare(name)),
            Some((project, model))
                if !project.is_empty() && !model.is_empty() && !model.contains(SEPARATOR) =>
            {
                Ok(Name::Qualified { project, model })
            }
            Some(_) => Err(Error::invalid(format!(
                "`{name}` is not a registered model name: write `<model>`, or \
                 `<project>{SEPARATOR}<model>` to name the project"
            ))),
        }
    }

    fn model(self) -> &'a str {
        match self {
            Name::Qualified { model, .. } | Name::Bare(model) => model,
        }
    }
}

fn qualified(project: &str, model: &str) -> String {
    format!("{project}{SEPARATOR}{model}")
}

fn missing_model(name: &str) -> Error {
    Error::not_found(format!("Registered Model with name={name} not found"))
}

/// The one candidate a bare name names among those found in the caller's projects (`None`: no
/// candidate), or the refusal that asks to qualify it.
fn choose<T>(name: &str, mut found: Vec<(T, String)>) -> Result<Option<(T, String)>> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => {
            let mut forms: Vec<String> = found.iter().map(|(_, p)| qualified(p, name)).collect();
            forms.sort();
            Err(Error::invalid(format!(
                "registered model name `{name}` is ambiguous: it names models in several of your \
                 projects; write one of {}",
                forms.join(", ")
            )))
        }
    }
}

/// The most projects a refusal names.
const MAX_NAMED: usize = 5;

/// The project a new model of a bare name goes to: the caller's one writable project.
fn only_writable(name: &str, mut writable: Vec<String>) -> Result<String> {
    writable.sort();
    match writable.len() {
        1 => Ok(writable.remove(0)),
        0 => Err(Error::invalid(format!(
            "cannot tell which project registered model `{name}` belongs to: you may create \
             models in no project; write `<project>{SEPARATOR}{name}` with a project where you \
             are a contributor"
        ))),
        n => {
            // Name a few: the point is the qualified form, not the caller's whole membership.
            let mut some = writable[..n.min(MAX_NAMED)].join(", ");
            if n > MAX_NAMED {
                some.push_str(&format!(" and {} more", n - MAX_NAMED));
            }
            Err(Error::invalid(format!(
                "cannot tell which project registered model `{name}` belongs to: you may create \
                 models in {some}; write `<project>{SEPARATOR}{name}`, e.g. `{}`",
                qualified(&writable[0], name)
            )))
        }
    }
}

/// A model as the caller named it.
#[derive(Debug, Clone)]
struct Registered {
    model: Model,
    project: String,
    /// The name to answer with.
    name: String,
}

/// A model of the name a caller wrote, in a project it may read.
struct Candidate {
    model: Model,
    role: Role,
    /// Its version of the number asked for, if one was asked for and it exists.
    version: Option<FoundVersion>,
}

/// A version found by name and number, with what its answer needs beyond its row.
struct FoundVersion {
    version: ModelVersion,
    /// Its creator's email.
    creator: Option<String>,
    /// Its aliases, free and governed (those of its stage), sorted.
    aliases: Vec<String>,
}

/// A row of [`candidates`]: the model, its project's name, the caller's membership there, the
/// version asked for, its creator's email and its aliases.
type CandidateRow = (
    Model,
    String,
    Option<Role>,
    Option<ModelVersion>,
    Option<String>,
    Option<Vec<String>>,
);

/// The models named `model` in projects the caller may read (a project-limited token: its one
/// project), with their projects' names and, when `number` is given, their version of that
/// number.
fn candidates<'a>(
    conn: &mut Conn,
    actor: &'a Actor,
    model: &'a str,
    number: Option<i32>,
) -> impl std::future::Future<Output = Result<Vec<(Candidate, String)>>> + Send + 'a {
    // One statement for what bare names need on every registry request: the models of the name,
    // their projects' names, the caller's membership there and the version asked for; those it
    // cannot read drop out here, so a version of another team's model is read, never answered.
    // The answer does not hold `conn` (a caller may pipeline it with other statements).
    // The version's creator and aliases come along, so that answering it takes no other
    // statement (`model-versions/get`).
    let found = Prepared(
        models_table::table
            .inner_join(projects_table::table)
            .left_join(
                memberships::table.on(memberships::project_id
                    .eq(models_table::project_id)
                    .and(memberships::user_id.nullable().eq(actor.user_id))),
            )
            .left_join(
                model_versions::table.on(model_versions::model_id
                    .eq(models_table::id)
                    .and(model_versions::version.nullable().eq(number))),
            )
            .left_join(users::table.on(users::id.eq(model_versions::created_by)))
            .filter(models_table::name.eq(model))
            .select((
                Model::as_select(),
                projects_table::name,
                memberships::role.nullable(),
                Option::<ModelVersion>::as_select(),
                users::email.nullable(),
                diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Array<diesel::sql_types::Text>>,
                >(labels::ALIASES_OF_VERSION_ROW),
            )),
    )
    .load::<CandidateRow>(conn);
    async move {
        Ok(found
            .await?
            .into_iter()
            .filter_map(|(model, project, membership, version, creator, aliases)| {
                let role = projects::role_given(actor, model.project_id, membership)?;
                let version = version.map(|version| FoundVersion {
                    version,
                    creator,
                    aliases: aliases.unwrap_or_default(),
                });
                Some((
                    Candidate {
                        model,
                        role,
                        version,
                    },
                    project,
                ))
            })
            .collect())
    }
}

/// The model a registered-model name means, the caller holding at least `needed` in its
/// project (an outsider gets the NOT_FOUND of a missing model).
async fn resolve(conn: &mut Conn, actor: &Actor, name: &str, needed: Role) -> Result<Registered> {
    match Name::parse(name)? {
        Name::Qualified { project, model } => {
            let found = models::find(conn, actor, project, model, needed)
                .await
                .map_err(projects::hiding(|| missing_model(name)))?;
            Ok(Registered {
                model: found,
                project: project.to_owned(),
                name: name.to_owned(),
            })
        }
        Name::Bare(model) => {
            let found = candidates(conn, actor, model, None).await?;
            Ok(chosen(name, model, found, needed)?.0)
        }
    }
}

/// The candidate a bare name means, the caller holding at least `needed` there, with the
/// version asked for (if any).
fn chosen(
    name: &str,
    model: &str,
    candidates: Vec<(Candidate, String)>,
    needed: Role,
) -> Result<(Registered, Option<FoundVersion>)> {
    let (found, project) = choose(model, candidates)?.ok_or_else(|| missing_model(name))?;
    projects::require(Some(found.role), needed)
        .map_err(projects::hiding(|| missing_model(name)))?;
    let registered = Registered {
        model: found.model,
        project,
        name: name.to_owned(),
    };
    Ok((registered, found.version))
}

/// Where a new model of this name goes, or the existing model it names.
enum Target {
    Exists,
    CreateIn(String),
}

async fn creation_target(conn: &mut Conn, actor: &Actor, name: Name<'_>) -> Result<Target> {
    match name {
        Name::Qualified { project, model } => {
            match models::find(conn, actor, project, model, Role::Viewer).await {
                Ok(_) => Ok(Target::Exists),
                Err(Error::NotFound(_)) => Ok(Target::CreateIn(project.to_owned())),
                Err(other) => Err(other),
            }
        }
        Name::Bare(model) => {
            if choose(model, candidates(conn, actor, model, None).await?)?.is_some() {
                return Ok(Target::Exists);
            }
            let member_of = projects::member_ids(conn, actor).await?;
            let mut ids: Vec<ProjectId> = match actor.project_scope {
                Some(scope) => vec![scope],
                None => member_of,
            };
            let roles = projects::roles_in(conn, actor, &ids).await?;
            ids.retain(|id| roles.get(id).is_some_and(|r| *r >= Role::Contributor));
            if ids.len() > 1 {
                ids = training_in(conn, actor, ids).await?;
            }
            let names = projects::by_ids(conn, &ids)
                .await?
                .into_iter()
                .map(|p| p.name)
                .collect();
            only_writable(model, names).map(Target::CreateIn)
        }
    }
}

/// Narrows the caller's writable projects to the one they are training in now — the project of
/// their only running runs — when there is one: `log_model(…, registered_model_name=…)`
/// registers from inside a run, so a person in several projects need not qualify the name
/// there. Otherwise (no running run, or running runs in several projects) all of them stay,
/// and the refusal asks for the qualified name.
async fn training_in(
    conn: &mut Conn,
    actor: &Actor,
    writable: Vec<ProjectId>,
) -> Result<Vec<ProjectId>> {
    use crate::db::schema::runs;
    let Some(user_id) = actor.user_id else {
        return Ok(writable);
    };
    let training: Vec<ProjectId> = runs::table
        .filter(runs::created_by.eq(user_id))
        .filter(runs::status.eq(crate::runs::RunStatus::Running))
        .filter(runs::deleted_at.is_null())
        .filter(runs::project_id.eq_any(&writable))
        .select(runs::project_id)
        .distinct()
        .limit(2)
        .load(conn)
        .await?;
    Ok(if training.len() == 1 {
        training
    } else {
        writable
    })
}

// ---- MLflow's objects ----

/// A stage as MLflow shows it: `None`, or the project's stage name capitalized.
fn stage_to_wire(stage: Option<&str>) -> String {
    let Some(stage) = stage else {
        return "None".to_owned();
    };
    let mut chars = stage.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "None".to_owned(),
    }
}

/// The project stage an MLflow stage names (case-insensitively; `None` is no stage).
fn stage_from_wire(stage: &str) -> Option<String> {
    let stage = stage.trim().to_ascii_lowercase();
    (stage != "none" && !stage.is_empty()).then_some(stage)
}

/// What MLflow shows as a version's source, and its logged model: a version taken from a logged
/// model's folder came from `models:/<id>`, any other from its run's path.
fn source_of(run_id: RunId, artifact_path: Option<&str>) -> (String, Option<&str>) {
    match artifact_path {
        Some(path) => match logged_models::model_of_folder(path) {
            Some(model) => (format!("models:/{model}"), Some(model)),
            None => (format!("runs:/{run_id}/{path}"), None),
        },
        None => (format!("runs:/{run_id}"), None),
    }
}

/// A version to answer and what its answer needs beyond its row (but its aliases).
struct Answering<'a> {
    version: &'a ModelVersion,
    name: &'a str,
    creator: Option<&'a str>,
}

/// A model version as MLflow answers it. Typed rather than a `json!` map: a search answers
/// hundreds of these, and a map allocates every key of every one.
#[derive(Serialize)]
struct VersionWire {
    name: String,
    version: String,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    user_id: String,
    current_stage: String,
    description: String,
    source: String,
    run_id: String,
    status: &'static str,
    run_link: &'static str,
    tags: Vec<KeyValue>,
    aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_id: Option<String>,
    /// Why a stage transition waits (only in `transition-stage`'s answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<String>,
}

fn version_wire(answering: &Answering<'_>, aliases: &[String]) -> VersionWire {
    let version = answering.version;
    let (source, model_id) = source_of(version.run_id, version.artifact_path.as_deref());
    VersionWire {
        name: answering.name.to_owned(),
        version: version.version.to_string(),
        creation_timestamp: wire::millis(version.created_at),
        last_updated_timestamp: wire::millis(version.created_at),
        user_id: answering.creator.unwrap_or_default().to_owned(),
        current_stage: stage_to_wire(version.stage.as_deref()),
        description: version.description.clone().unwrap_or_default(),
        source,
        run_id: version.run_id.to_string(),
        status: "READY",
        run_link: "",
        tags: wire::key_values(&version.tags),
        aliases: aliases.to_vec(),
        model_id: model_id.map(str::to_owned),
        status_message: None,
    }
}

/// What answering versions needs beyond their rows and names: their creators' emails and their
/// aliases.
struct Extras {
    emails: HashMap<UserId, String>,
    aliases: HashMap<ModelVersionId, Vec<String>>,
}

/// The [`Extras`] of these versions: two statements, pipelined (one round trip); the answer does
/// not hold `conn`, so a caller may await it together with a statement of its own.
fn extras_of(
    conn: &mut Conn,
    versions: &[ModelVersion],
) -> impl std::future::Future<Output = Result<Extras>> + Send + 'static {
    let creators: Vec<UserId> = versions
        .iter()
        .map(|v| v.created_by)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ids: Vec<ModelVersionId> = versions.iter().map(|v| v.id).collect();
    let emails = users::table
        .filter(users::id.eq_any(creators))
        .select((users::id, users::email))
        .load::<(UserId, String)>(conn);
    let aliases = labels::aliases_of(conn, ids);
    async move {
        let emails = async { Ok(emails.await?) };
        let (emails, aliases) = futures_util::future::try_join(emails, aliases).await?;
        Ok(Extras {
            emails: emails.into_iter().collect(),
            aliases,
        })
    }
}

/// The answers of versions, each with the name its model is answered by (`name_of`).
fn wires_of<'n>(
    versions: &[ModelVersion],
    name_of: impl Fn(&ModelVersion) -> &'n str,
    extras: &Extras,
) -> Vec<VersionWire> {
    versions
        .iter()
        .map(|version| {
            let answering = Answering {
                version,
                name: name_of(version),
                creator: extras.emails.get(&version.created_by).map(String::as_str),
            };
            let aliases = extras.aliases.get(&version.id).map(Vec::as_slice);
            version_wire(&answering, aliases.unwrap_or_default())
        })
        .collect()
}

/// The answers of many versions, each with the name its model is answered by (`name_of`): one
/// round trip (creators and aliases, pipelined) whatever their number.
async fn version_wires<'n>(
    conn: &mut Conn,
    versions: &[ModelVersion],
    name_of: impl Fn(&ModelVersion) -> &'n str,
) -> Result<Vec<VersionWire>> {
    let extras = extras_of(conn, versions).await?;
    Ok(wires_of(versions, name_of, &extras))
}

/// The answer of a version found with its creator and aliases ([`bare_version`]).
fn found_version_wire(found: FoundVersion, name: &str) -> VersionWire {
    version_wire_with(&found.version, name, found.creator, found.aliases)
}

/// The answer of a version the caller has just registered, without reading anything back: its
/// creator is the caller, and nothing can alias it yet (an alias is set on an existing version,
/// a governed alias follows a stage, and a new version has none).
fn new_version_wire(version: &ModelVersion, name: &str, actor: &Actor) -> VersionWire {
    version_wire_with(version, name, Some(actor.email.clone()), Vec::new())
}

/// The answer of a version whose creator's email and aliases are known.
fn version_wire_with(
    version: &ModelVersion,
    name: &str,
    creator: Option<String>,
    aliases: Vec<String>,
) -> VersionWire {
    let extras = Extras {
        emails: creator
            .map(|email| HashMap::from([(version.created_by, email)]))
            .unwrap_or_default(),
        aliases: HashMap::from([(version.id, aliases)]),
    };
    let mut wires = wires_of(std::slice::from_ref(version), |_| name, &extras);
    wires.pop().expect("one answer per version")
}

async fn one_version_wire(
    conn: &mut Conn,
    version: ModelVersion,
    name: &str,
) -> Result<VersionWire> {
    let mut wires = version_wires(conn, std::slice::from_ref(&version), |_| name).await?;
    Ok(wires.pop().expect("one answer per version"))
}

/// The newest version of each stage (and of no stage) of these models, by model and version.
async fn latest_per_stage(conn: &mut Conn, model_ids: &[ModelId]) -> Result<Vec<ModelVersion>> {
    let mut latest: Vec<ModelVersion> = model_versions::table
        .filter(model_versions::model_id.eq_any(model_ids))
        .distinct_on((model_versions::model_id, model_versions::stage))
        .order((
            model_versions::model_id,
            model_versions::stage,
            model_versions::version.desc(),
        ))
        .select(ModelVersion::as_select())
        .load(conn)
        .await?;
    latest.sort_by_key(|v| (v.model_id, v.version));
    Ok(latest)
}

/// The answers of many registered models, each with its answered name.
async fn model_wires(conn: &mut Conn, registered: &[(Model, String)]) -> Result<Vec<Value>> {
    let ids: Vec<ModelId> = registered.iter().map(|(m, _)| m.id).collect();
    let names: HashMap<ModelId, &str> =
        registered.iter().map(|(m, n)| (m.id, n.as_str())).collect();
    let latest = latest_per_stage(conn, &ids).await?;
    let wires = version_wires(conn, &latest, |v| {
        names.get(&v.model_id).copied().unwrap_or_default()
    })
    .await?;
    let mut latest_wires: HashMap<ModelId, Vec<VersionWire>> = HashMap::new();
    let mut newest: HashMap<ModelId, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for (version, value) in latest.iter().zip(wires) {
        latest_wires
            .entry(version.model_id)
            .or_default()
            .push(value);
        let at = newest.entry(version.model_id).or_insert(version.created_at);
        *at = (*at).max(version.created_at);
    }
    let aliases = labels::aliases_of_models(conn, &ids).await?;
    Ok(registered
        .iter()
        .map(|(model, name)| {
            let updated = newest
                .get(&model.id)
                .map_or(model.created_at, |at| (*at).max(model.created_at));
            let mut value = json!({
                "name": name,
                "creation_timestamp": wire::millis(model.created_at),
                "last_updated_timestamp": wire::millis(updated),
                "tags": wire::key_values(&model.tags),
                "latest_versions": latest_wires.remove(&model.id).unwrap_or_default(),
                "aliases": aliases.get(&model.id).into_iter().flatten().map(|(alias, version)| {
                    json!({"alias": alias, "version": version.to_string()})
                }).collect::<Vec<_>>(),
            });
            if let Some(description) = &model.description {
                value["description"] = json!(description);
            }
            value
        })
        .collect())
}

async fn one_model_wire(conn: &mut Conn, registered: &Registered) -> Result<Value> {
    let mut wires =
        model_wires(conn, &[(registered.model.clone(), registered.name.clone())]).await?;
    Ok(wires.pop().unwrap_or_default())
}

/// The names search results are answered with: bare where no other readable project has a
/// model of that name, qualified where one does. One statement, one row per distinct model.
fn answer_names(
    conn: &mut Conn,
    readable: &Readable,
    found: &[ModelId],
) -> impl std::future::Future<Output = Result<HashMap<ModelId, String>>> + Send + 'static {
    #[derive(QueryableByName)]
    struct Homes {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: ModelId,
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        project: String,
        /// Readable projects with a model of this name.
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        homes: i64,
    }
    let mut ids: Vec<uuid::Uuid> = found.iter().map(|id| id.uuid()).collect();
    ids.sort();
    ids.dedup();
    let mut st = Statement::default();
    let ids = st.bind(Bind::Uuids(ids));
    let readable = st.readable("h.project_id", readable);
    st.sql = format!(
        "SELECT m.id, m.name, p.name AS project, \
           (SELECT count(*) FROM models h WHERE h.name = m.name AND {readable}) AS homes \
         FROM models m JOIN projects p ON p.id = m.project_id WHERE m.id = ANY({ids})"
    );
    let rows = Prepared(st.query()).load::<Homes>(conn);
    async move {
        Ok(rows
            .await?
            .into_iter()
            .map(|m| {
                let name = if m.homes > 1 {
                    qualified(&m.project, &m.name)
                } else {
                    m.name
                };
                (m.id, name)
            })
            .collect())
    }
}

// ---- the domain side of each request ----

/// Creates a registered model (a Custody model) with its tags; an existing one of that name is
/// RESOURCE_ALREADY_EXISTS.
async fn create_registered(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    description: Option<&str>,
    tags: &[KeyValue],
) -> Result<std::result::Result<Registered, MlflowError>> {
    let parsed = Name::parse(name)?;
    wire::checked_tags(tags, "a registered model")?;
    let project = match creation_target(conn, actor, parsed).await? {
        Target::Exists => {
            return Ok(Err(MlflowError::already_exists(format!(
                "Registered Model (name={name}) already exists."
            ))))
        }
        Target::CreateIn(project) => project,
    };
    let description = description.filter(|d| !d.is_empty());
    let model = models::create(conn, actor, &project, parsed.model(), description, None).await?;
    for tag in tags {
        labels::set_tag(
            conn,
            actor,
            Tagged::Model(model.id),
            &tag.key,
            Some(&tag.value),
        )
        .await?;
    }
    let model = models::find(conn, actor, &project, parsed.model(), Role::Viewer).await?;
    Ok(Ok(Registered {
        model,
        project,
        name: name.to_owned(),
    }))
}

fn missing_version(name: &str, version: &str) -> Error {
    Error::not_found(format!(
        "Model Version (name={name}, version={version}) not found"
    ))
}

fn version_number(version: &str) -> Result<i32> {
    version.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "Parameter 'version' must be an integer, got '{version}'."
        ))
    })
}

/// A version of a model named by its bare name, the caller holding at least `needed`: the
/// common case, in one statement (the models of the name with the caller's roles, their
/// versions of that number, and what answering the version needs). `name` is the name as
/// written and the model's name in it; `version` the number as written and as parsed.
async fn bare_version(
    conn: &mut Conn,
    actor: &Actor,
    (name, model): (&str, &str),
    (version, number): (&str, i32),
    needed: Role,
) -> Result<(Registered, FoundVersion)> {
    let found = candidates(conn, actor, model, Some(number)).await?;
    let (registered, found) = chosen(name, model, found, needed)?;
    let found = found.ok_or_else(|| missing_version(name, version))?;
    Ok((registered, found))
}

/// The answer of one version of a registered model the caller may read: a bare name in one
/// statement ([`bare_version`]), a qualified name through [`resolve_version`] and a second read.
async fn readable_version_wire(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    version: &str,
) -> Result<VersionWire> {
    if let Name::Bare(model) = Name::parse(name)? {
        let number = version_number(version)?;
        let (registered, found) =
            bare_version(conn, actor, (name, model), (version, number), Role::Viewer).await?;
        return Ok(found_version_wire(found, &registered.name));
    }
    let (registered, found) = resolve_version(conn, actor, name, version, Role::Viewer).await?;
    one_version_wire(conn, found, &registered.name).await
}

/// One version of a registered model, the caller holding at least `needed`.
async fn resolve_version(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    version: &str,
    needed: Role,
) -> Result<(Registered, ModelVersion)> {
    let number = version_number(version)?;
    if let Name::Bare(model) = Name::parse(name)? {
        let (registered, found) =
            bare_version(conn, actor, (name, model), (version, number), needed).await?;
        return Ok((registered, found.version));
    }
    let registered = resolve(conn, actor, name, needed).await?;
    let found = model_versions::table
        .filter(model_versions::model_id.eq(registered.model.id))
        .filter(model_versions::version.eq(number))
        .select(ModelVersion::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| missing_version(name, version))?;
    Ok((registered, found))
}

/// Where a version's files come from, as its `source` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A path of a run's files.
    Run { run: RunId, path: String },
    /// A logged model's folder (or a path inside it).
    LoggedModel { id: String, path: String },
}

impl Source {
    fn parse(source: &str) -> Result<Source> {
        let unsupported = || {
            Error::invalid(format!(
                "Custody registers versions from files it holds: the source `{source}` must be \
                 runs:/<run id>/<path>, models:/<logged model id> or \
                 mlflow-artifacts:/runs/<run id>/<path>"
            ))
        };
        if let Some(rest) = source.strip_prefix("runs:/") {
            let rest = rest.trim_start_matches('/');
            let (run, path) = rest.split_once('/').unwrap_or((rest, ""));
            let run = run.parse().map_err(|_| {
                Error::invalid(format!("`{run}` in source `{source}` is not a run id"))
            })?;
            return Source::of_run(run, path, source);
        }
        if let Some(rest) = source.strip_prefix("models:/") {
            let rest = rest.trim_matches('/');
            let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !logged_models::is_model_id(id) {
                return Err(Error::invalid(format!(
                    "the source `{source}` names a registered model: register from the source \
                     of that version (runs:/… or models:/<logged model id>) instead"
                )));
            }
            return Ok(Source::LoggedModel {
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
        if let Some(rest) = source.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts://host:port/…` names this server too.
            let path = match rest.strip_prefix("//") {
                Some(authority_and_path) => authority_and_path
                    .split_once('/')
                    .map(|(_, p)| p)
                    .unwrap_or_default(),
                None => rest,
            };
            return match Location::parse(path)? {
                Location::Run { run, path } => Source::of_run(run, &path, source),
                Location::LoggedModel { id, path } => Ok(Source::LoggedModel { id, path }),
                Location::ModelVersion { .. } => Err(Error::invalid(format!(
                    "the source `{source}` is a registered version's files: register from that \
                     version's own source instead"
                ))),
            };
        }
        Err(unsupported())
    }

    fn of_run(run: RunId, path: &str, source: &str) -> Result<Source> {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err(Error::invalid(format!(
                "the source `{source}` names a whole run: name the folder of the model among its \
                 artifacts (runs:/<run id>/<path>)"
            )));
        }
        Ok(Source::Run {
            run,
            path: path.to_owned(),
        })
    }
}

/// The run and run-relative path a source's files are taken from, and the logged model it
/// names (which must be READY: its files are fixed once finalized).
async fn source_files(
    conn: &mut Conn,
    actor: &Actor,
    source: &Source,
) -> Result<(RunId, String, Option<String>)> {
    match source {
        Source::Run { run, path } => Ok((*run, path.clone(), None)),
        Source::LoggedModel { id, path } => {
            let model = logged_models::find(conn, actor, id, Role::Viewer).await?;
            if model.status != LoggedStatus::Ready {
                return Err(Error::conflict(format!(
                    "logged model {id} is {}: finalize it as READY before registering it",
                    model.status
                )));
            }
            let folder = logged_models::folder_of(id);
            let path = if path.is_empty() {
                folder
            } else {
                format!("{folder}/{path}")
            };
            Ok((model.run_id, path, Some(model.id)))
        }
    }
}

struct NewVersion<'a> {
    name: &'a str,
    source: &'a str,
    run_id: Option<&'a str>,
    model_id: Option<&'a str>,
    description: Option<&'a str>,
    tags: &'a [KeyValue],
}

/// Registers a version from its source, with its tags; its `run_id` and `model_id`, when given,
/// must be those of the source.
async fn register(
    conn: &mut Conn,
    actor: &Actor,
    new: NewVersion<'_>,
) -> Result<(Registered, ModelVersion)> {
    wire::checked_tags(new.tags, "a model version")?;
    let source = Source::parse(new.source)?;
    let registered = resolve(conn, actor, new.name, Role::Contributor).await?;
    let (run, path, logged) = source_files(conn, actor, &source).await?;
    if let Some(given) = new.run_id.filter(|r| !r.is_empty()) {
        if given.parse::<RunId>().ok() != Some(run) {
            return Err(Error::invalid(format!(
                "run_id {given} is not the run of source `{}` ({run})",
                new.source
            )));
        }
    }
    if let Some(given) = new.model_id.filter(|m| !m.is_empty()) {
        if logged.as_deref() != Some(given) {
            return Err(Error::invalid(format!(
                "model_id {given} is not the logged model of source `{}`",
                new.source
            )));
        }
    }
    let description = new.description.filter(|d| !d.is_empty());
    let version = models::register_version_of(
        conn,
        actor,
        &registered.model,
        run,
        Some(&path),
        description,
    )
    .await?;
    for tag in new.tags {
        labels::set_tag(
            conn,
            actor,
            Tagged::ModelVersion(version.id),
            &tag.key,
            Some(&tag.value),
        )
        .await?;
    }
    // Tags changed the row after it was inserted.
    let version = if new.tags.is_empty() {
        version
    } else {
        reread(conn, version.id).await?
    };
    Ok((registered, version))
}

async fn reread(conn: &mut Conn, id: ModelVersionId) -> Result<ModelVersion> {
    Ok(models::version_and_model(conn, id).await?.0)
}

/// The refusal of a promotion the policies denied (the decision itself is recorded).
fn denied(promotion: &Promotion, what: &str) -> MlflowError {
    let reasons: Vec<&str> = promotion.policy_result["deny"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    MlflowError::permission_denied(format!(
        "{what} to `{}` was denied by the promotion policies: {}",
        promotion.stage,
        reasons.join("; ")
    ))
}

/// What a stage transition did: the version as it now is, and the promotion it requested.
struct Transitioned {
    registered: Registered,
    version: ModelVersion,
    promotion: Option<Promotion>,
}

/// Requests the promotion of a version into a stage (nothing, if it is there already).
async fn transition(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    name: &str,
    version: &str,
    stage: &str,
) -> Result<std::result::Result<Transitioned, MlflowError>> {
    let Some(stage) = stage_from_wire(stage) else {
        return Err(Error::invalid(
            "Custody does not move a version to stage None: a version leaves its stage when \
             another version is promoted there, or by a transition to Archived",
        ));
    };
    let (registered, found) =
        resolve_version(conn, actor, name, version, Role::Contributor).await?;
    if found.stage.as_deref() == Some(stage.as_str()) {
        return Ok(Ok(Transitioned {
            registered,
            version: found,
            promotion: None,
        }));
    }
    let promotion = promotions::request(conn, actor, gate, found.id, &stage, None).await?;
    if promotion.status == PromotionStatus::Denied {
        let what = format!("the promotion of version {}", found.version);
        return Ok(Err(denied(&promotion, &what)));
    }
    let version = reread(conn, found.id).await?;
    Ok(Ok(Transitioned {
        registered,
        version,
        promotion: Some(promotion),
    }))
}

/// Points an alias at a version; a governed alias asks for a promotion instead (refused with
/// the policies' reasons when denied, the decision recorded).
async fn move_alias(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<std::result::Result<(), MlflowError>> {
    let (_, found) = resolve_version(conn, actor, name, version, Role::Contributor).await?;
    match labels::set_alias(conn, actor, gate, found.id, alias, None).await? {
        AliasMove::Requested(promotion) if promotion.status == PromotionStatus::Denied => {
            let what = format!(
                "moving alias `{alias}` (the promotion of version {})",
                found.version
            );
            Ok(Err(denied(&promotion, &what)))
        }
        AliasMove::Moved | AliasMove::Requested(_) => Ok(Ok(())),
    }
}

/// The message a version's answer carries while a promotion of it waits for approval.
fn pending_message(promotion: &Promotion) -> Option<String> {
    (promotion.status == PromotionStatus::Pending).then(|| {
        format!(
            "promotion {} to `{}` awaits {} approval(s); the stage changes once it is approved",
            promotion.id, promotion.stage, promotion.required_approvals
        )
    })
}

/// The qualified name of model `m` (`<project>~<model>`), for filters that write one. A subquery
/// rather than a join: only such a filter pays for reading the project, not every search.
const QUALIFIED_NAME: &str =
    "((SELECT p.name FROM projects p WHERE p.id = m.project_id) || '~' || m.name)";

/// Models as MLflow's registered-model search sees them.
static REGISTERED_MODELS: Subject = Subject {
    from: "models m",
    row: "m.*",
    id: "m.id",
    project: "m.project_id",
    tags: "m.tags",
    run: None,
    attributes: &[
        AttributeSpec {
            names: &["name"],
            column: "m.name",
            value_type: ValueType::Text,
            rule: Rule::QualifiedName {
                qualified: QUALIFIED_NAME,
                separator: SEPARATOR,
            },
        },
        AttributeSpec {
            names: &["creation_timestamp", "created"],
            column: "m.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
        AttributeSpec {
            // As answered: the newest version's creation (a version is never older than its
            // model).
            names: &["last_updated_timestamp", "timestamp"],
            column: "coalesce((SELECT max(x.created_at) FROM model_versions x \
                     WHERE x.model_id = m.id), m.created_at)",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};

/// MLflow's order of registered models when the search names none.
const MODELS_ORDER: &str = "name ASC";

/// Model versions as MLflow's version search sees them (plus Custody's stage, alias and the
/// source run's metrics and params).
static REGISTERED_VERSIONS: Subject = Subject {
    // Only the versions and their models: a join per found row (its project, its creator) cost
    // more than reading them once per distinct model and creator afterwards (`answer_names`,
    // `version_wires`).
    from: "model_versions v JOIN models m ON m.id = v.model_id",
    row: "v.*",
    id: "v.id",
    project: "m.project_id",
    tags: "v.tags",
    run: Some("v.run_id"),
    attributes: &[
        AttributeSpec {
            names: &["name"],
            column: "m.name",
            value_type: ValueType::Text,
            rule: Rule::QualifiedName {
                qualified: QUALIFIED_NAME,
                separator: SEPARATOR,
            },
        },
        AttributeSpec {
            names: &["version_number", "version"],
            column: "v.version",
            value_type: ValueType::Number,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["run_id"],
            column: "v.run_id",
            value_type: ValueType::Id,
            rule: Rule::Plain,
        },
        AttributeSpec {
            // As answered: `None`, or the stage capitalized (`Staging`); see `stage_to_wire`.
            names: &["current_stage", "stage"],
            column: "coalesce(upper(left(v.stage, 1)) || substr(v.stage, 2), 'None')",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["alias"],
            column: "",
            value_type: ValueType::Text,
            rule: Rule::Alias,
        },
        AttributeSpec {
            names: &[
                "creation_timestamp",
                "last_updated_timestamp",
                "timestamp",
                "created",
            ],
            column: "v.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};

/// The clause the client appends to every registered-model search to leave prompts out; Custody
/// keeps no prompts, and a plain tag comparison would also leave out every model lacking the tag.
const NOT_A_PROMPT: &str = "tag.`mlflow.prompt.is_prompt` != 'true'";

fn without_prompt_clause(filter: Option<&str>) -> Option<String> {
    let filter = filter?.trim();
    let rest = if filter == NOT_A_PROMPT {
        ""
    } else if let Some(head) = filter.strip_suffix(NOT_A_PROMPT) {
        let head = head.trim_end();
        head.strip_suffix("AND")
            .or_else(|| head.strip_suffix("and"))
            .map(str::trim_end)
            .unwrap_or(filter)
    } else {
        filter
    };
    (!rest.is_empty()).then(|| rest.to_owned())
}

const MODELS_DEFAULT: i64 = 100;
const MODELS_MAX: i64 = 1000;
/// The client asks for 10,000 versions a page.
const VERSIONS_MAX: i64 = 10_000;

// ---- handlers ----

#[derive(Deserialize)]
struct NameArgs {
    name: Option<String>,
}

#[derive(Deserialize)]
struct CreateModelArgs {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create_model(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: CreateModelArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let actor = &call.actor;
    let created = call
        .write(|c| {
            create_registered(c, actor, &name, a.description.as_deref(), &a.tags).scope_boxed()
        })
        .await??;
    let mut conn = call.conn().await?;
    ok(json!({"registered_model": one_model_wire(&mut conn, &created).await?}))
}

async fn get_model(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: NameArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let mut conn = call.conn().await?;
    let registered = resolve(&mut conn, &call.actor, &name, Role::Viewer).await?;
    ok(json!({"registered_model": one_model_wire(&mut conn, &registered).await?}))
}

#[derive(Deserialize)]
struct UpdateArgs {
    name: Option<String>,
    version: Option<Value>,
    description: Option<String>,
}

async fn update_model(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: UpdateArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let actor = &call.actor;
    let registered = call
        .write(|c| {
            async move {
                let mut registered = resolve(c, actor, &name, Role::Contributor).await?;
                registered.model = models::set_description(
                    c,
                    actor,
                    registered.model.id,
                    a.description.as_deref().filter(|d| !d.is_empty()),
                )
                .await?;
                Ok(registered)
            }
            .scope_boxed()
        })
        .await?;
    let mut conn = call.conn().await?;
    ok(json!({"registered_model": one_model_wire(&mut conn, &registered).await?}))
}

async fn not_renamable(_call: Call) -> Reply {
    Err(MlflowError::permission_denied(
        "Custody does not rename registered models: policies, aliases, deployments and the \
         audit trail refer to a model by its name; create a model under the new name instead",
    ))
}

async fn model_not_deletable(_call: Call) -> Reply {
    Err(MlflowError::permission_denied(
        "Custody keeps every registered model and version: they are the record of what was \
         built and deployed; archive versions instead (transition to Archived)",
    ))
}

async fn version_not_deletable(_call: Call) -> Reply {
    Err(MlflowError::permission_denied(
        "Custody keeps every model version: it is the record of what was built and deployed; \
         archive it instead (transition to Archived)",
    ))
}

#[derive(Deserialize)]
struct TagArgs {
    name: Option<String>,
    version: Option<Value>,
    key: Option<String>,
    value: Option<String>,
}

/// A version number as MLflow sends it (`"1"` or `1`).
fn version_text(version: Option<Value>) -> std::result::Result<String, MlflowError> {
    match required(version, "version")? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(MlflowError::invalid(format!(
            "Parameter 'version' must be an integer, got '{other}'."
        ))),
    }
}

async fn set_model_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    change_model_tag(call, http, body, true).await
}

async fn delete_model_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    change_model_tag(call, http, body, false).await
}

async fn change_model_tag(call: Call, http: HttpRequest, body: web::Bytes, set: bool) -> Reply {
    let a: TagArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let key = required(a.key, "key")?;
    let value = set.then(|| a.value.unwrap_or_default());
    let actor = &call.actor;
    call.write(|c| {
        async move {
            let registered = resolve(c, actor, &name, Role::Contributor).await?;
            let target = Tagged::Model(registered.model.id);
            labels::set_tag(c, actor, target, &key, value.as_deref()).await
        }
        .scope_boxed()
    })
    .await?;
    ok(json!({}))
}

async fn set_version_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    change_version_tag(call, http, body, true).await
}

async fn delete_version_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    change_version_tag(call, http, body, false).await
}

async fn change_version_tag(call: Call, http: HttpRequest, body: web::Bytes, set: bool) -> Reply {
    let a: TagArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let version = version_text(a.version)?;
    let key = required(a.key, "key")?;
    let value = set.then(|| a.value.unwrap_or_default());
    let actor = &call.actor;
    call.write(|c| {
        async move {
            let (_, found) = resolve_version(c, actor, &name, &version, Role::Contributor).await?;
            let target = Tagged::ModelVersion(found.id);
            labels::set_tag(c, actor, target, &key, value.as_deref()).await
        }
        .scope_boxed()
    })
    .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct LatestArgs {
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    stages: Vec<String>,
}

async fn latest_versions(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: LatestArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let wanted: Vec<Option<String>> = a.stages.iter().map(|s| stage_from_wire(s)).collect();
    let mut conn = call.conn().await?;
    let registered = resolve(&mut conn, &call.actor, &name, Role::Viewer).await?;
    let latest: Vec<ModelVersion> = latest_per_stage(&mut conn, &[registered.model.id])
        .await?
        .into_iter()
        .filter(|v| wanted.is_empty() || wanted.contains(&v.stage))
        .collect();
    let wires = version_wires(&mut conn, &latest, |_| &registered.name).await?;
    ok(json!({ "model_versions": wires }))
}

#[derive(Deserialize)]
struct AliasArgs {
    name: Option<String>,
    alias: Option<String>,
    version: Option<Value>,
}

async fn set_alias(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: AliasArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let alias = required(a.alias, "alias")?;
    let version = version_text(a.version)?;
    let actor = &call.actor;
    let gate = call.state.gate();
    let gate = &gate;
    call.write(|c| move_alias(c, actor, gate, &name, &alias, &version).scope_boxed())
        .await??;
    ok(json!({}))
}

async fn get_by_alias(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: AliasArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let alias = required(a.alias, "alias")?;
    let mut conn = call.conn().await?;
    let registered = resolve(&mut conn, &call.actor, &name, Role::Viewer).await?;
    let Some(version) = labels::resolve(&mut conn, &registered.model, &alias).await? else {
        return Err(MlflowError::invalid(format!(
            "Registered model alias {alias} not found."
        )));
    };
    ok(json!({"model_version": one_version_wire(&mut conn, version, &registered.name).await?}))
}

async fn delete_alias(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: AliasArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let alias = required(a.alias, "alias")?;
    let actor = &call.actor;
    call.write(|c| {
        async move {
            let registered = resolve(c, actor, &name, Role::Contributor).await?;
            labels::delete_alias(
                c,
                actor,
                &registered.project,
                &registered.model.name,
                &alias,
            )
            .await
        }
        .scope_boxed()
    })
    .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct CreateVersionArgs {
    name: Option<String>,
    source: Option<String>,
    run_id: Option<String>,
    model_id: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create_version(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: CreateVersionArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let source = required(a.source, "source")?;
    let actor = &call.actor;
    let new = NewVersion {
        name: &name,
        source: &source,
        run_id: a.run_id.as_deref(),
        model_id: a.model_id.as_deref(),
        description: a.description.as_deref(),
        tags: &a.tags,
    };
    let (registered, version) = call
        .write(|c| register(c, actor, new).scope_boxed())
        .await?;
    ok(json!({"model_version": new_version_wire(&version, &registered.name, actor)}))
}

#[derive(Deserialize)]
struct VersionArgs {
    name: Option<String>,
    version: Option<Value>,
}

async fn get_version(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: VersionArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let version = version_text(a.version)?;
    let mut conn = call.conn().await?;
    let answer = readable_version_wire(&mut conn, &call.actor, &name, &version).await?;
    ok(json!({ "model_version": answer }))
}

async fn update_version(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: UpdateArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let version = version_text(a.version)?;
    let actor = &call.actor;
    let (registered, updated) = call
        .write(|c| {
            async move {
                let (registered, found) =
                    resolve_version(c, actor, &name, &version, Role::Contributor).await?;
                let description = a.description.as_deref().filter(|d| !d.is_empty());
                let updated =
                    models::set_version_description(c, actor, found.id, description).await?;
                Ok((registered, updated))
            }
            .scope_boxed()
        })
        .await?;
    let mut conn = call.conn().await?;
    ok(json!({"model_version": one_version_wire(&mut conn, updated, &registered.name).await?}))
}

async fn download_uri(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: VersionArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let version = version_text(a.version)?;
    let mut conn = call.conn().await?;
    let (_, found) = resolve_version(&mut conn, &call.actor, &name, &version, Role::Viewer).await?;
    ok(json!({"artifact_uri": wire::artifact_uri("model-versions", &found.id.to_string())}))
}

#[derive(Deserialize)]
struct TransitionArgs {
    name: Option<String>,
    version: Option<Value>,
    stage: Option<String>,
}

async fn transition_stage(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: TransitionArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    let version = version_text(a.version)?;
    let stage = required(a.stage, "stage")?;
    let actor = &call.actor;
    let gate = call.state.gate();
    let gate = &gate;
    let done = call
        .write(|c| transition(c, actor, gate, &name, &version, &stage).scope_boxed())
        .await??;
    let mut conn = call.conn().await?;
    let mut answer = one_version_wire(&mut conn, done.version, &done.registered.name).await?;
    if let Some(message) = done.promotion.as_ref().and_then(pending_message) {
        answer.status_message = Some(message);
    }
    ok(json!({"model_version": answer}))
}

#[derive(Deserialize)]
struct SearchArgs {
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct ModelsAnswer {
    registered_models: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(Serialize)]
struct VersionsAnswer {
    model_versions: Vec<VersionWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search_models(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: SearchArgs = args(&http, &body)?;
    let limit = page_size(a.max_results, MODELS_DEFAULT, MODELS_MAX)?;
    let filter = without_prompt_clause(a.filter.as_deref());
    let order = if a.order_by.is_empty() {
        vec![MODELS_ORDER.to_owned()]
    } else {
        a.order_by
    };
    let search = Search::new(
        &REGISTERED_MODELS,
        filter.as_deref(),
        &order,
        a.page_token.as_deref().filter(|t| !t.is_empty()),
        limit,
    )?;
    let mut conn = call.conn().await?;
    let readable = projects::readable(&mut conn, &call.actor).await?;
    let page = sql::page::<Model>(&mut conn, &REGISTERED_MODELS, &readable, &search).await?;
    let model_ids: Vec<ModelId> = page.rows.iter().map(|m| m.id).collect();
    let names = answer_names(&mut conn, &readable, &model_ids).await?;
    let next_page_token = page.next_cursor();
    let named: Vec<(Model, String)> = page
        .rows
        .into_iter()
        .map(|m| {
            let name = names.get(&m.id).cloned().unwrap_or_else(|| m.name.clone());
            (m, name)
        })
        .collect();
    ok(ModelsAnswer {
        registered_models: model_wires(&mut conn, &named).await?,
        next_page_token,
    })
}

async fn search_versions(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: SearchArgs = args(&http, &body)?;
    let limit = page_size(a.max_results, VERSIONS_MAX, VERSIONS_MAX)?;
    let search = Search::new(
        &REGISTERED_VERSIONS,
        a.filter.as_deref(),
        &a.order_by,
        a.page_token.as_deref().filter(|t| !t.is_empty()),
        limit,
    )?;
    let mut conn = call.conn().await?;
    let readable = projects::readable(&mut conn, &call.actor).await?;
    let page =
        sql::page::<ModelVersion>(&mut conn, &REGISTERED_VERSIONS, &readable, &search).await?;
    let model_ids: Vec<ModelId> = page.rows.iter().map(|v| v.model_id).collect();
    // Names, creators and aliases in one round trip.
    let names = answer_names(&mut conn, &readable, &model_ids);
    let extras = extras_of(&mut conn, &page.rows);
    let (names, extras) = futures_util::future::try_join(names, extras).await?;
    let name_of = |v: &ModelVersion| names.get(&v.model_id).map_or("", String::as_str);
    ok(VersionsAnswer {
        model_versions: wires_of(&page.rows, name_of, &extras),
        next_page_token: page.next_cursor(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_bare_and_qualified() {
        assert_eq!(Name::parse("churn").unwrap(), Name::Bare("churn"));
        assert_eq!(
            Name::parse("risk~churn").unwrap(),
            Name::Qualified {
                project: "risk",
                model: "churn"
            }
        );
        assert_eq!(Name::parse("risk~churn").unwrap().model(), "churn");
        for bad in ["", "  ", "~churn", "risk~", "a~b~c"] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_name_names_one_model_or_asks_to_qualify() {
        assert_eq!(choose::<u8>("churn", vec![]).unwrap(), None);
        assert_eq!(
            choose("churn", vec![(1, "risk".to_owned())]).unwrap(),
            Some((1, "risk".to_owned()))
        );
        let err = choose(
            "churn",
            vec![(1, "risk".to_owned()), (2, "growth".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("growth~churn, risk~churn"), "{err}");
    }

    #[test]
    fn a_new_bare_name_goes_to_the_one_writable_project() {
        assert_eq!(only_writable("churn", vec!["risk".into()]).unwrap(), "risk");
        let none = only_writable("churn", vec![]).unwrap_err().to_string();
        assert!(none.contains("<project>~churn"), "{none}");
        let several = only_writable("churn", vec!["risk".into(), "growth".into()])
            .unwrap_err()
            .to_string();
        assert!(several.contains("growth, risk"), "{several}");
        assert!(several.contains("growth~churn"), "{several}");
        let many: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
        let many = only_writable("churn", many).unwrap_err().to_string();
        assert!(many.contains("p0, p1, p2, p3, p4 and 3 more"), "{many}");
    }

    #[test]
    fn stages() {
        assert_eq!(stage_to_wire(None), "None");
        assert_eq!(stage_to_wire(Some("staging")), "Staging");
        assert_eq!(stage_to_wire(Some("production")), "Production");
        assert_eq!(stage_to_wire(Some("archived")), "Archived");
        assert_eq!(stage_from_wire("Staging").as_deref(), Some("staging"));
        assert_eq!(stage_from_wire("PRODUCTION").as_deref(), Some("production"));
        assert_eq!(stage_from_wire("archived").as_deref(), Some("archived"));
        assert_eq!(stage_from_wire("canary").as_deref(), Some("canary"));
        assert_eq!(stage_from_wire("None"), None);
        assert_eq!(stage_from_wire("none"), None);
    }

    #[test]
    fn sources() {
        let run = "0191d3c2-7d4e-7b8a-9c1d-2e3f4a5b6c7d";
        let run_id: RunId = run.parse().unwrap();
        let model = "m-4a0bbc85ef18413cb372b1a79c19539e";
        let of_run = |path: &str| Source::Run {
            run: run_id,
            path: path.into(),
        };
        assert_eq!(
            Source::parse(&format!("runs:/{run}/model")).unwrap(),
            of_run("model")
        );
        assert_eq!(
            Source::parse(&format!("runs:/{}/a/b/", run.replace('-', ""))).unwrap(),
            of_run("a/b")
        );
        assert_eq!(
            Source::parse(&format!("mlflow-artifacts:/runs/{run}/model")).unwrap(),
            of_run("model")
        );
        assert_eq!(
            Source::parse(&format!("mlflow-artifacts://host:5000/runs/{run}/model")).unwrap(),
            of_run("model")
        );
        let logged = |path: &str| Source::LoggedModel {
            id: model.into(),
            path: path.into(),
        };
        assert_eq!(
            Source::parse(&format!("models:/{model}")).unwrap(),
            logged("")
        );
        assert_eq!(
            Source::parse(&format!("mlflow-artifacts:/logged-models/{model}")).unwrap(),
            logged("")
        );
        for bad in [
            format!("runs:/{run}"),
            format!("runs:/{run}/"),
            "runs:/nope/model".to_owned(),
            "models:/churn/1".to_owned(),
            "models:/churn@champion".to_owned(),
            format!("mlflow-artifacts:/model-versions/{run}"),
            "s3://bucket/model".to_owned(),
            "/tmp/model".to_owned(),
        ] {
            assert!(Source::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_answer_their_source() {
        let run: RunId = "0191d3c2-7d4e-7b8a-9c1d-2e3f4a5b6c7d".parse().unwrap();
        let model = "m-4a0bbc85ef18413cb372b1a79c19539e";
        assert_eq!(
            source_of(run, Some("model")),
            (format!("runs:/{run}/model"), None)
        );
        assert_eq!(
            source_of(run, Some(&logged_models::folder_of(model))),
            (format!("models:/{model}"), Some(model))
        );
        assert_eq!(source_of(run, None), (format!("runs:/{run}"), None));
    }

    #[test]
    fn the_prompt_clause_is_dropped() {
        let clause = NOT_A_PROMPT;
        assert_eq!(without_prompt_clause(Some(clause)), None);
        assert_eq!(
            without_prompt_clause(Some(&format!("name = 'churn' AND {clause}"))).as_deref(),
            Some("name = 'churn'")
        );
        assert_eq!(
            without_prompt_clause(Some("tags.team = 'growth'")).as_deref(),
            Some("tags.team = 'growth'")
        );
        assert_eq!(without_prompt_clause(None), None);
        assert_eq!(without_prompt_clause(Some("  ")), None);
    }

    #[test]
    fn searches_take_mlflow_filters() {
        for filter in [
            "name = 'churn'",
            "name = 'risk~churn'",
            "name LIKE 'churn%'",
            "name IN ('a', 'risk~b')",
            "tags.team = 'growth'",
        ] {
            assert!(
                Search::new(&REGISTERED_MODELS, Some(filter), &[], None, 10).is_ok(),
                "{filter}"
            );
        }
        for filter in [
            "name='churn' and run_id='0d57990698b84273b43add0c13e53abb'",
            "name = 'risk~churn' and version_number > 1",
            "alias = 'champion'",
            "current_stage = 'Staging'",
        ] {
            assert!(
                Search::new(&REGISTERED_VERSIONS, Some(filter), &[], None, 10).is_ok(),
                "{filter}"
            );
        }
        let order = [
            "last_updated_timestamp DESC".to_owned(),
            MODELS_ORDER.to_owned(),
        ];
        assert!(Search::new(&REGISTERED_MODELS, None, &order, None, 1).is_ok());
        let order = ["version_number DESC".to_owned()];
        assert!(Search::new(&REGISTERED_VERSIONS, None, &order, None, 1).is_ok());
        let st = Search::new(
            &REGISTERED_MODELS,
            Some("name IN ('a', 'risk~b')"),
            &[],
            None,
            10,
        )
        .unwrap()
        .statement(&REGISTERED_MODELS, &Readable::Ids(Vec::new()));
        assert!(
            st.sql
                .contains(&format!("(m.name = ANY($2) OR {QUALIFIED_NAME} = ANY($3))")),
            "{}",
            st.sql
        );
    }
}
