//! Custody: a model registry and MLOps governance server.
//!
//! Domain modules own their tables and rules (`projects`, `stages`, `datasets`, `code`, `runs`,
//! `models`, `lineage`, `promotions` with its approvals, `artifacts`, `audit`, `auth`, `notify`,
//! `policy`); `access` and `actor` say who may read and who acts; `graphql` and `http` are thin
//! edges sharing `state`; `db` and `config` hold the plumbing; `app` wires the commands together.
//! ARCHITECTURE.md at the repository root walks through it.

pub mod access;
pub mod access_tokens;
pub mod actor;
pub mod app;
pub mod artifacts;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod code;
pub mod config;
pub mod datasets;
pub mod db;
pub mod device_login;
pub mod error;
pub mod events;
pub mod graphql;
pub mod group_commit;
pub mod http;
pub mod ids;
pub mod invitations;
pub mod jobs;
pub mod labels;
pub mod lineage;
pub mod metric_history;
pub mod metric_queue;
pub mod mlflow;
pub mod models;
pub mod notify;
pub mod openlineage;
pub mod outbound;
pub mod policy;
pub mod projects;
pub mod promotions;
pub mod recalls;
pub mod run_keys;
pub mod runs;
pub mod search;
pub mod secrets;
pub mod service_accounts;
pub mod sessions;
pub mod sign_in;
pub mod stages;
pub mod state;
pub mod templates;
pub mod token_cache;
pub mod validate;
