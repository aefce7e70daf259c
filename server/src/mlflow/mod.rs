//! MLflow's REST API over Custody, so that training code written for MLflow logs here by
//! changing `MLFLOW_TRACKING_URI` (and sending a Custody token as `MLFLOW_TRACKING_TOKEN`).
//!
//! What maps to what: an experiment is a project (its id is the project's id; its name the
//! project's, or the MLflow name it was created under, such as `/Shared/churn`); a run is a run;
//! a registered model is a model and its versions are model versions; an MLflow 3 logged model
//! is a named folder of a run's files. Every request authenticates like the rest of the API, and
//! every change goes through the same domain functions as GraphQL, in one transaction with its
//! audit entries: nothing here bypasses authorization, immutability or the promotion gate.
//!
//! Files: `request` (parsing MLflow's requests, the caller, errors in MLflow's shape), `wire`
//! (MLflow's JSON objects), then one file per part of the API.

mod artifacts;
mod datasets;
mod experiments;
mod logged_models;
mod registry;
mod request;
mod runs;
mod wire;

use actix_web::{web, HttpRequest, HttpResponse};

pub use request::MlflowError;

/// The largest JSON request body (a `log-batch` of 1,000 metrics is about 100 KB; a
/// `log-inputs` with a schema and profile can be larger).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Mounts the API under the paths the MLflow client calls (`/api/2.0/mlflow/…`), and under
/// `/ajax-api/2.0/mlflow/…`, where MLflow's own web UI calls the same endpoints.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"] {
        cfg.service(
            web::scope(prefix)
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .configure(experiments::routes)
                .configure(runs::routes)
                .configure(datasets::routes)
                .configure(logged_models::routes)
                .configure(registry::routes)
                .default_service(web::to(unsupported)),
        );
    }
    for path in [
        "/api/3.0/mlflow/server-info",
        "/ajax-api/3.0/mlflow/server-info",
    ] {
        cfg.route(path, web::get().to(server_info));
    }
    for prefix in [
        "/api/2.0/mlflow-artifacts",
        "/ajax-api/2.0/mlflow-artifacts",
    ] {
        cfg.service(
            web::scope(prefix)
                .configure(artifacts::routes)
                .default_service(web::to(unsupported)),
        );
    }
}

/// How this server is set up, as the MLflow client asks before some calls (public in MLflow
/// too): no MLflow store of its own, no workspaces, uploads and downloads through this server in
/// one request each (no multipart or presigned transfers).
async fn server_info() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "store_type": null,
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {"gateway": false},
    }))
}

/// What MLflow answers for an endpoint it does not have, with the reason that this one is missing.
async fn unsupported(http: HttpRequest) -> HttpResponse {
    MlflowError::endpoint_not_found(format!(
        "Custody does not serve {} {} of MLflow's REST API",
        http.method(),
        http.path()
    ))
    .into_response()
}
