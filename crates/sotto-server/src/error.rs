//! The server's one error type. Every failure a handler returns becomes an
//! [`ErrorCode`] here, and its HTTP status comes from
//! [`ErrorCode::http_status`]: the single mapping.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sotto_proto::{ErrorCode, ErrorResponse};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for `rate_limited`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        let message = match code {
            ErrorCode::Unauthenticated => "sign in first: Authorization: Bearer <token>",
            ErrorCode::NotPermitted => "your role in this room does not allow this",
            ErrorCode::TargetOutranksYou => "you can only act on someone below your role",
            ErrorCode::RoomNotFound => "no such room",
            ErrorCode::RoomEnded => "the room has ended",
            ErrorCode::NotInRoom => "join the room first",
            ErrorCode::TargetNotInRoom => "that user is not in the room",
            ErrorCode::UserNotFound => "no such user",
            _ => code.as_str(),
        };
        ApiError::new(code, message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Database errors can carry values from the query; log only the kind.
        let code = match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        tracing::error!(kind = db_error_kind(&err), "database error");
        ApiError::new(
            code,
            "the server could not complete this; nothing was changed",
        )
    }
}

fn db_error_kind(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Io(_) => "io",
        sqlx::Error::PoolTimedOut => "pool_timed_out",
        sqlx::Error::PoolClosed => "pool_closed",
        sqlx::Error::RowNotFound => "row_not_found",
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode",
        _ => "other",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(ErrorResponse::new(self.code, self.message));
        let mut response = (status, body).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
