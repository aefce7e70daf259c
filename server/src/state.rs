//! What every request handler shares: the pool, the keys, the artifact store, the policies and
//! the settings that shape links and outbound calls. It lives outside both edges (`http`,
//! `graphql`), which each reach it.

use crate::artifacts::Artifacts;
use crate::auth::TokenKeys;
use crate::db::DbPool;

/// Shared state of the server, cloned into every worker.
#[derive(Clone)]
pub struct AppState {
    pub pool: DbPool,
    pub keys: TokenKeys,
    pub artifacts: Artifacts,
    /// The Ed25519 key that signs audit exports, checkpoints and compliance reports.
    pub audit: crate::audit::AuditKeys,
    pub policy: std::sync::Arc<crate::policy::PolicyBundle>,
    /// Base of the links the server hands out (mails, direct uploads).
    pub public_url: String,
    /// Where webhooks may point (checked at registration and at every delivery).
    pub webhooks: crate::outbound::WebhookPolicy,
    /// Live events of GraphQL subscriptions.
    pub events: std::sync::Arc<crate::events::Hub>,
    /// How people sign in from a browser, and what approvals demand of them.
    pub sign_in: std::sync::Arc<crate::sign_in::SignIn>,
    /// Where single-metric requests queue to be written together (group commit).
    pub metrics: crate::metric_queue::MetricQueue,
    /// Where OpenLineage events queue to be applied together (group commit).
    pub openlineage: crate::openlineage::Ingestion,
}

impl AppState {
    pub fn gate(&self) -> crate::promotions::Gate<'_> {
        crate::promotions::Gate {
            policy: &self.policy,
            keys: &self.keys,
            public_url: &self.public_url,
            approval_rules: self.sign_in.approvals,
        }
    }
}
