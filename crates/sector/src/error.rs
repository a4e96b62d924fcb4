//! The one table from error kinds to gRPC status codes.

use henvis_bus::BusError;
use henvis_policy::FieldError;
use tonic::{Code, Status};

/// Every way a sector service call can fail. Messages name fields and ids, never values
/// that could carry a child's data.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or malformed.
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something the request would create exists already (e.g. an idempotency key used for
    /// a different request).
    #[error("{0}")]
    AlreadyExists(String),
    /// A workflow step is missing.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The bus is unreachable; retry with the same idempotency key.
    #[error("{0}; retry with the same idempotency key")]
    Unavailable(String),
    /// The bus is full; retry later with the same idempotency key.
    #[error("{0}; retry later with the same idempotency key")]
    Full(String),
    /// A fault of henvis itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A field error.
    pub fn field(field: impl Into<String>, expected: impl Into<String>) -> Self {
        ApiError::Invalid(FieldError {
            field: field.into(),
            expected: expected.into(),
        })
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Full(_) => Code::ResourceExhausted,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Unavailable(_) => ApiError::Unavailable("message bus unavailable".into()),
            BusError::Full(_) => ApiError::Full("message bus full".into()),
            BusError::Erased(case) => ApiError::FailedPrecondition(format!(
                "case_id: case `{case}` was erased by its administrators; nothing of it can be read, and its id is not used again: open a new case"
            )),
            BusError::Other(m) => ApiError::Internal(m),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        if matches!(e, ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::Full(_)) {
            tracing::warn!(error = %e, "call failed");
        }
        Status::new(e.code(), e.to_string())
    }
}
