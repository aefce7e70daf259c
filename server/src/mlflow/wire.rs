//! Pieces of MLflow's JSON objects shared by every part of the API: times in milliseconds since
//! the epoch, tags as `[{key, value}]`, and the `mlflow-artifacts:` URIs Custody hands out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A time as MLflow writes it: milliseconds since the epoch.
pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A time MLflow sent (milliseconds since the epoch), if it is one.
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A tag, param or other key/value pair as MLflow sends and answers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// A `{key: value}` JSON object of strings (how Custody stores tags) as MLflow's list.
pub fn key_values(object: &Value) -> Vec<KeyValue> {
    object
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// MLflow's list as a map (a later pair wins, as MLflow's own stores do).
pub fn to_map(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

/// MLflow's tags held to Custody's label rules (key characters, value size, how many), as a map;
/// `holder` names what holds them in the refusal ("an experiment").
pub fn checked_tags(
    tags: &[KeyValue],
    holder: &str,
) -> crate::error::Result<BTreeMap<String, String>> {
    for tag in tags {
        crate::labels::check_key(&tag.key)?;
        crate::validate::text("tag value", &tag.value, 5_000)?;
    }
    let tags = to_map(tags);
    if tags.len() > crate::labels::MAX_TAGS {
        return Err(crate::error::Error::invalid(format!(
            "{holder} holds at most {} tags",
            crate::labels::MAX_TAGS
        )));
    }
    Ok(tags)
}

/// Where the client sends and fetches an owner's files: through this server's
/// `mlflow-artifacts` API, which maps the path's first two segments back to the owner
/// (`runs/<id>`, `logged-models/<id>`, `model-versions/<id>`).
pub fn artifact_uri(owner_kind: &str, owner_id: &str) -> String {
    format!("mlflow-artifacts:/{owner_kind}/{owner_id}")
}
