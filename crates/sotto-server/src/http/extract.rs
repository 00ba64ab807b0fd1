//! Extractors that turn every malformed request into an [`ApiError`] with a
//! stable code (axum's own rejections are plain text).

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};
use sotto_proto::ErrorCode;

use super::AppState;
use crate::error::ApiError;
use crate::store::AuthedSession;

/// A JSON body: a JSON object (an array or a scalar is refused even where
/// it would fill the struct by position), then the request type. What is
/// refused gets a plain message ([`super::body`]).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        super::body::read(req, state).await.map(ApiJson)
    }
}

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // Only a path that is not valid UTF-8 once decoded gets here: every
        // parameter is a string.
        ApiError::new(ErrorCode::NotFound, "no such route")
    }
}

/// Query parameters: anything that does not fit the type (an unknown
/// parameter, a number that is not one) is a `malformed_request`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(ErrorCode::MalformedRequest, e.body_text())
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

/// A JSON body that may be absent (no body, or JSON `null`, is `None`); a
/// body that is there must be a JSON object of `T`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let has_body = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v != "0")
            && req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        if !has_body {
            return Ok(OptionalJson(None));
        }
        match super::body::read_value(req, state).await? {
            serde_json::Value::Null => Ok(OptionalJson(None)),
            value => super::body::parse_value(value).map(|v| OptionalJson(Some(v))),
        }
    }
}

/// Checks an access statement a client sends (`sotto_proto::access`):
/// well-formed, signed by this session's own device, and saying `verb`
/// about `target` (in `room`, for an allow or a ban). Returns its bytes.
/// The room's key distributor checks it again; this keeps junk out of the
/// database and tells the client at once.
pub fn own_statement(
    session: &AuthedSession,
    text: &str,
    verb: sotto_proto::access::AccessVerb,
    room: Option<&sotto_proto::RoomId>,
    target: &sotto_proto::UserId,
) -> Result<Vec<u8>, ApiError> {
    use sotto_proto::access::AccessStatement;
    let invalid = |why: &str| ApiError::new(ErrorCode::InvalidAccessStatement, why);
    let bytes = sotto_proto::keys::decode_b64(text).map_err(|_| invalid("not base64url"))?;
    let st = AccessStatement::parse(&bytes).map_err(|e| invalid(&e.to_string()))?;
    if st.signer != *session.device_key.as_bytes() {
        return Err(invalid("not signed by this session's device"));
    }
    if st.verb != verb {
        return Err(invalid("a statement of another kind"));
    }
    if &st.target != target {
        return Err(invalid("about another user"));
    }
    if room.is_some_and(|r| r.as_str() != st.room) {
        return Err(invalid("about another room"));
    }
    Ok(bytes)
}
