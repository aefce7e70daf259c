//! MLflow's requests as Custody reads them: the caller (the API's own authentication), the
//! arguments (JSON body, or the query string of a GET, as MLflow's client sends them), and
//! errors in MLflow's shape (`{"error_code", "message"}` with the HTTP status MLflow gives it),
//! so the client raises the exceptions its users already catch.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError};
use diesel_async::scoped_futures::ScopedBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tracing_actix_web::RequestId;

use crate::actor::Actor;
use crate::db::Conn;
use crate::error::Error;
use crate::state::AppState;

/// An error as MLflow answers it.
#[derive(Debug)]
pub struct MlflowError {
    pub code: &'static str,
    status: StatusCode,
    message: String,
}

impl MlflowError {
    fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        MlflowError {
            code,
            status,
            message: message.into(),
        }
    }

    /// The name is taken: the client's registration flow reads this code as "already there,
    /// go on" (registered models), so only a true duplicate may carry it.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND, message)
    }

    /// Refused by a promotion policy (or another governance rule): the client raises it with
    /// the reason.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new("PERMISSION_DENIED", StatusCode::FORBIDDEN, message)
    }

    pub fn endpoint_not_found(message: impl Into<String>) -> Self {
        Self::new("ENDPOINT_NOT_FOUND", StatusCode::NOT_FOUND, message)
    }

    pub fn into_response(self) -> HttpResponse {
        self.error_response()
    }
}

impl std::fmt::Display for MlflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Custody's errors in MLflow's vocabulary. A conflict is MLflow's INVALID_STATE (a change that
/// no longer applies), except where a handler knows it is a duplicate name.
impl From<Error> for MlflowError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Unauthenticated(_) => {
                Self::new("UNAUTHENTICATED", StatusCode::UNAUTHORIZED, message)
            }
            Error::Forbidden(_) => Self::permission_denied(message),
            Error::NotFound(_) => Self::not_found(message),
            Error::InvalidInput(_) | Error::TooLarge(_) => Self::invalid(message),
            Error::Conflict(_) => Self::new("INVALID_STATE", StatusCode::BAD_REQUEST, message),
            Error::Unavailable(_) => Self::new(
                "TEMPORARILY_UNAVAILABLE",
                StatusCode::SERVICE_UNAVAILABLE,
                message,
            ),
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Self::new(
                    "INTERNAL_ERROR",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                )
            }
        }
    }
}

impl From<diesel::result::Error> for MlflowError {
    fn from(err: diesel::result::Error) -> Self {
        Error::from(err).into()
    }
}

impl ResponseError for MlflowError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(serde_json::json!({"error_code": self.code, "message": self.message}))
    }
}

pub type Reply = Result<HttpResponse, MlflowError>;

/// A JSON answer.
pub fn ok(body: impl Serialize) -> Reply {
    Ok(HttpResponse::Ok().json(body))
}

/// The authenticated caller of an MLflow request, with the server's state.
pub struct Call {
    pub state: web::Data<AppState>,
    pub actor: Actor,
}

impl FromRequest for Call {
    type Error = MlflowError;
    type Future = Pin<Box<dyn Future<Output = Result<Call, MlflowError>>>>;

    fn from_request(http: &HttpRequest, _: &mut Payload) -> Self::Future {
        let http = http.clone();
        Box::pin(async move {
            let state = http
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| Error::internal(anyhow::anyhow!("no application state")))?;
            let request_id = http
                .extensions()
                .get::<RequestId>()
                .map(|id| id.to_string())
                .unwrap_or_default();
            let actor = crate::http::authenticate(&state, &http, request_id).await?;
            Ok(Call { state, actor })
        })
    }
}

impl Call {
    /// Runs one change in one transaction with its audit entries; refused whole to read-only
    /// callers (auditors, read-only tokens), as every GraphQL mutation is.
    pub async fn write<'a, T, F>(&'a self, command: F) -> Result<T, MlflowError>
    where
        T: Send + 'a,
        F: for<'r> FnOnce(&'r mut Conn) -> ScopedBoxFuture<'a, 'r, Result<T, Error>> + Send + 'a,
    {
        self.actor.require_writer()?;
        Ok(crate::http::transaction(&self.state, command).await?)
    }

    /// A connection for reads.
    pub async fn conn(&self) -> Result<crate::db::PooledConn, MlflowError> {
        Ok(self.state.pool.get().await.map_err(Error::from)?)
    }
}

/// The request's arguments: the JSON body, or (a GET, or a body-less request) the query string,
/// where a repeated key is a list and every value a string (the fields' deserializers below
/// read numbers and booleans written as text).
pub fn args<T: DeserializeOwned>(http: &HttpRequest, body: &[u8]) -> Result<T, MlflowError> {
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        query_object(http.query_string())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| MlflowError::invalid(format!("malformed JSON request body: {e}")))?
    };
    serde_json::from_value(value)
        .map_err(|e| MlflowError::invalid(format!("malformed request: {e}")))
}

fn query_object(query: &str) -> Value {
    let mut object = Map::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = Value::String(value.into_owned());
        match object.get_mut(key.as_ref()) {
            None => {
                object.insert(key.into_owned(), value);
            }
            Some(Value::Array(list)) => list.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(object)
}

/// Field deserializers that accept what either transport carries.
pub mod lenient {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Int(i64),
        Float(f64),
        Text(String),
    }

    /// An integer written as a JSON number or as text (`"100"`).
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        use serde::de::Error as _;
        match Option::<NumberOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumberOrText::Int(i)) => Ok(Some(i)),
            Some(NumberOrText::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                Ok(Some(f as i64))
            }
            Some(NumberOrText::Float(f)) => Err(D::Error::custom(format!("{f} is not an integer"))),
            Some(NumberOrText::Text(t)) if t.is_empty() => Ok(None),
            Some(NumberOrText::Text(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("`{t}` is not an integer"))),
        }
    }

    /// A number written as a JSON number or as text (including `NaN` and `Infinity`, which
    /// MLflow's client sends for such metric values).
    pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        use serde::de::Error as _;
        match NumberOrText::deserialize(d)? {
            NumberOrText::Int(i) => Ok(i as f64),
            NumberOrText::Float(f) => Ok(f),
            NumberOrText::Text(t) => match t.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "Infinity" | "inf" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                _ => t
                    .parse()
                    .map_err(|_| D::Error::custom(format!("`{t}` is not a number"))),
            },
        }
    }

    /// A boolean written as JSON or as text.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        use serde::de::Error as _;
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(D::Error::custom(format!("`{s}` is not a boolean"))),
            },
            Some(other) => Err(D::Error::custom(format!("{other} is not a boolean"))),
        }
    }

    /// A list, or one value where a query string had the key once.
    pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
        use serde::de::Error as _;
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(D::Error::custom))
                .collect(),
            Some(one) => serde_json::from_value(one)
                .map(|v| vec![v])
                .map_err(D::Error::custom),
        }
    }
}

/// A required argument, with MLflow's message for a missing one.
pub fn required<T>(value: Option<T>, name: &str) -> Result<T, MlflowError> {
    value.ok_or_else(|| {
        MlflowError::invalid(format!("Missing value for required parameter '{name}'"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(default, deserialize_with = "lenient::int")]
        max_results: Option<i64>,
        #[serde(default, deserialize_with = "lenient::list")]
        order_by: Vec<String>,
        #[serde(default)]
        filter: Option<String>,
    }

    #[test]
    fn query_strings_read_like_json() {
        let probe: Probe = serde_json::from_value(query_object(
            "max_results=100&order_by=name+ASC&order_by=version_number%20DESC&filter=name%3D%27a%27",
        ))
        .unwrap();
        assert_eq!(probe.max_results, Some(100));
        assert_eq!(probe.order_by, ["name ASC", "version_number DESC"]);
        assert_eq!(probe.filter.as_deref(), Some("name='a'"));
        let one: Probe = serde_json::from_value(query_object("order_by=name")).unwrap();
        assert_eq!(one.order_by, ["name"]);
        let bad = serde_json::from_value::<Probe>(query_object("max_results=ten"));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("`ten` is not an integer"));
    }
}
