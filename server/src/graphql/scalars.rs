//! Custom scalars of the public contract.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A SHA-256 digest: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256(pub String);

#[Scalar(name = "Sha256")]
impl ScalarType for Sha256 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => crate::validate::sha256(s)
                .map(Sha256)
                .map_err(|e| InputValueError::custom(e.to_string())),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}
