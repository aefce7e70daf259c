//! Typed ids: one type per kind of row, so a run id can never be passed where a project id is
//! expected. Each is a UUID in the database (diesel maps it to the `uuid` column type), its
//! hyphenated text at the edges (GraphQL `ID` through `Display`, JSON, URLs), and `Copy` like the
//! UUID it wraps.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{FromSql, Result as DeserializeResult};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, Result as SerializeResult, ToSql};
use diesel::sql_types::Uuid as SqlUuid;
use uuid::Uuid;

/// What every typed id offers generic code (parsing at the edges names what was expected) and
/// the few places that need the UUID itself (lineage edges, which point into five tables).
pub trait TypedId: Copy + FromStr + fmt::Display {
    /// What the id names, for error messages ("run", "model version").
    const WHAT: &'static str;

    fn from_uuid(uuid: Uuid) -> Self;

    fn uuid(self) -> Uuid;
}

/// Declares a typed id: the newtype, its diesel mapping to `uuid`, text conversions and a
/// constructor of fresh (time-ordered, v7) ids.
macro_rules! typed_id {
    ($( $(#[$meta:meta])* $name:ident as $what:literal; )+) => {$(
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[diesel(sql_type = SqlUuid)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id: UUIDv7, so ids sort by creation time and index well.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl TypedId for $name {
            const WHAT: &'static str = $what;

            fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }

        impl ToSql<SqlUuid, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> SerializeResult {
                <Uuid as ToSql<SqlUuid, Pg>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<SqlUuid, Pg> for $name {
            fn from_sql(value: PgValue<'_>) -> DeserializeResult<Self> {
                <Uuid as FromSql<SqlUuid, Pg>>::from_sql(value).map(Self)
            }
        }
    )+};
}

typed_id! {
    /// A user (a person or, later, a service account).
    UserId as "user";
    /// A project: the unit of membership and of every role check.
    ProjectId as "project";
    /// A dataset (its versions have their own ids).
    DatasetId as "dataset";
    DatasetVersionId as "dataset version";
    CodeCommitId as "code commit";
    RunId as "run";
    ModelId as "model";
    ModelVersionId as "model version";
    DeploymentId as "deployment";
    PromotionId as "promotion";
    ApprovalId as "approval";
    /// The id (`jti`) of an issued API token.
    TokenId as "token";
    /// A personal access token or a service account's token (`cst_…`).
    AccessTokenId as "access token";
    WebhookId as "webhook";
    /// An invitation to join a project.
    InvitationId as "invitation";
    /// A command-line login by device flow.
    DeviceLoginId as "device login";
    /// A refresh token (and, for its family, the chain of its rotations).
    RefreshTokenId as "refresh token";
    /// A browser session (its secret is in the cookie, never its id).
    SessionId as "session";
    /// A mailed sign-in link.
    SignInLinkId as "sign-in link";
    /// An upload in progress (direct or multipart), before its object is committed.
    UploadId as "upload";
    /// A one-time approval link mailed to an approver (its `jti`).
    ApprovalLinkId as "approval link";
    LineageEdgeId as "lineage edge";
    /// An OpenLineage job: a JOB lineage node.
    JobId as "job";
    DatasetRecallId as "dataset recall";
    /// A message waiting in the outbox (a webhook delivery or a mail).
    OutboxId as "outbox message";
    AuditCheckpointId as "audit checkpoint";
    AuditArchiveId as "audit archive";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_garbage_is_refused() {
        let id = RunId::generate();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        assert!("not-a-uuid".parse::<RunId>().is_err());
        assert_eq!(async_graphql::ID::from(id).as_str(), id.to_string());
        assert_eq!(RunId::WHAT, "run");
    }

    #[test]
    fn fresh_ids_sort_by_creation() {
        let first = ModelVersionId::generate();
        let second = ModelVersionId::generate();
        assert!(first < second);
    }
}
