use actix_web::{get, post, web, HttpRequest, HttpResponse};
use async_graphql::http::GraphiQLSource;
use async_graphql_actix_web::{GraphQLRequest, GraphQLResponse};
use tracing_actix_web::RequestId;

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
    let caller = Caller(super::authenticate(&state, &http, request_id.to_string()).await);
    let request = request
        .into_inner()
        .data(caller)
        .data(loader(state.pool.clone()));
    let mut response = schema.execute(request).await;
    add_missing_codes(&mut response);
    response.into()
}

#[get("/graphql")]
async fn graphiql() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .title("Custody GraphiQL")
                .finish(),
        )
}
