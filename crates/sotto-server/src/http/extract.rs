//! Extractors that turn every malformed request into an [`ApiError`] with a
//! stable code (axum's own rejections are plain text).

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};
use sotto_proto::ErrorCode;

use super::AppState;
use crate::error::ApiError;
use crate::store::AuthedSession;

/// A JSON body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is larger than 64 KiB")
            }
            JsonRejection::JsonDataError(e) => {
                ApiError::new(ErrorCode::MalformedRequest, e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::new(ErrorCode::MalformedRequest, e.body_text())
            }
            other => ApiError::new(ErrorCode::MalformedRequest, other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(ErrorCode::NotFound, rejection.body_text())
    }
}

/// The SHA-256 under which a token, invite code or challenge is stored.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The signed-in caller, from `Authorization: Bearer <token>`.
pub struct AuthUser(pub AuthedSession);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(ErrorCode::Unauthenticated)?;
        let session = state.authenticate(token).await?;
        Ok(AuthUser(session))
    }
}

/// Takes a token from the caller's bucket for the unauthenticated endpoints.
pub struct AuthRateLimit;

impl FromRequestParts<AppState> for AuthRateLimit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned()
        else {
            return Ok(AuthRateLimit);
        };
        match state.limiter.check(addr.ip(), std::time::Instant::now()) {
            Ok(()) => Ok(AuthRateLimit),
            Err(wait) => {
                state
                    .metrics
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut err =
                    ApiError::new(ErrorCode::RateLimited, "too many attempts; try again later");
                err.retry_after = Some(wait.as_secs().max(1));
                Err(err)
            }
        }
    }
}
