use actix_web::{get, post, web, HttpRequest, HttpResponse};
use async_graphql::http::GraphiQLSource;
use async_graphql_actix_web::{GraphQLRequest, GraphQLResponse};
use tracing_actix_web::RequestId;

use crate::auth::{self, Actor};
use crate::error::Error;
use crate::graphql::{add_missing_codes, loader, AppState, Caller, CustodySchema};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(graphql).service(graphiql);
}

#[post("/graphql")]
async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    request_id: RequestId,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let caller = Caller(authenticate(&state, &http, request_id.to_string()).await);
    let request = request.into_inner().data(caller).data(loader(state.pool.clone()));
    let mut response = schema.execute(request).await;
    add_missing_codes(&mut response);
    response.into()
}

#[get("/graphql")]
async fn graphiql() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(GraphiQLSource::build().endpoint("/graphql").title("Custody GraphiQL").finish())
}

async fn authenticate(state: &AppState, http: &HttpRequest, request_id: String) -> Result<Actor, Error> {
    let header = http
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("a bearer token is required (Authorization: Bearer …)".into()))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into()))?;
    let mut conn = state.pool.get().await?;
    let mut actor = auth::authenticate(&mut conn, &state.keys, token.trim()).await?;
    actor.request_id = Some(request_id);
    Ok(actor)
}
