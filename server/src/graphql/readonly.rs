//! The auditor role is read-only everywhere: every root field of `Mutation` (present and future)
//! is refused to an auditor who is not a server admin, before its resolver runs. Being a schema
//! extension, a new mutation cannot forget the check.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ServerResult, Value};

use super::{gql_error, Caller};

pub struct AuditorsReadOnly;

impl ExtensionFactory for AuditorsReadOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuditorsReadOnly)
    }
}

#[async_trait::async_trait]
impl Extension for AuditorsReadOnly {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Root mutation fields only: their parent is the schema's mutation type.
        if info.parent_type == "Mutation" && info.path_node.parent.is_none() {
            if let Some(Caller(Ok(actor))) = ctx.data_opt::<Caller>() {
                if let Err(refusal) = actor.require_writer() {
                    let pos = async_graphql::Pos::default();
                    return Err(gql_error(refusal).into_server_error(pos));
                }
            }
        }
        next.run(ctx, info).await
    }
}
