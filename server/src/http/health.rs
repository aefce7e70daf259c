use actix_web::{get, web, HttpResponse};
use diesel_async::RunQueryDsl;

use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz);
}

/// 200 once the database answers; migrations ran before the listener accepted anything.
#[get("/healthz")]
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let reachable = match state.pool.get().await {
        Ok(mut conn) => diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    };
    if reachable {
        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "database unreachable"}))
    }
}
