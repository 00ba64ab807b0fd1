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
    /// Seconds, for `rate_limited` and `database_unavailable`: sent as `Retry-After`.
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

/// Seconds a client is told to wait (`Retry-After`) when the database is
/// away: long enough for a restart to be noticed, short enough that nobody
/// gives up.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Database errors can carry values from the query; log only the kind.
        let kind = db_error_kind(&err);
        if matches!(err, sqlx::Error::PoolClosed) {
            let mut api = ApiError::new(ErrorCode::Unavailable, "the server is shutting down");
            api.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
            return api;
        }
        if database_unavailable(&err) {
            tracing::warn!(kind, "database unavailable");
            let mut api = ApiError::new(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable; nothing was changed, try again shortly",
            );
            api.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
            return api;
        }
        tracing::error!(kind, "database error");
        ApiError::new(
            ErrorCode::Internal,
            "the server could not complete this; nothing was changed",
        )
    }
}

/// Whether `err` says the database cannot be reached or cannot take the
/// request now (as opposed to a bug in a query): a restart, a lost
/// connection, a full pool, a locked or full SQLite file. A transaction cut
/// off this way rolls back, so the request changed nothing and may be retried.
fn database_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                // 08: connection exception; 53: insufficient resources
                // (too many connections, disk full); 57P01-57P03: the server
                // is shutting down, crashed, or starting up.
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
            } else if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // The primary result code is the low byte of the extended one:
                // SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_FULL (13).
                let primary = sqlx::error::DatabaseError::code(lite)
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                matches!(primary, Some(5 | 6 | 13))
            } else {
                false
            }
        }
        _ => false,
    }
}

fn db_error_kind(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Io(_) => "io",
        sqlx::Error::Tls(_) => "tls",
        sqlx::Error::Protocol(_) => "protocol",
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
