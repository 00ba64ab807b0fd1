//! Profiles and follows.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sotto_proto::access::AccessVerb;
use sotto_proto::api::{Profile, StatementRequest, UserSummary};

use super::AppState;
use super::extract::{ApiPath, AuthUser, OptionalJson, own_statement};
use crate::error::ApiResult;

/// A user's profile.
#[utoipa::path(get, path = "/api/users/{username}", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 200, body = Profile)))]
pub async fn profile(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(
        state.store.profile(&session.user_id, &username).await?,
    ))
}

/// Follow a user (idempotent). The optional body carries the follow signed
/// by this session's device: without it, the follow does not let the user
/// into social rooms this account hosts or moderates.
#[utoipa::path(put, path = "/api/users/{username}/follow", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    request_body(content = Option<StatementRequest>),
    responses((status = 204)))]
pub async fn follow(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(username): ApiPath<String>,
    OptionalJson(body): OptionalJson<StatementRequest>,
) -> ApiResult<StatusCode> {
    let followee = state.store.user_by_username(&username).await?;
    let statement = body
        .and_then(|b| b.statement)
        .map(|text| own_statement(&session, &text, AccessVerb::Follow, None, &followee.id))
        .transpose()?;
    state
        .store
        .follow(
            &session.user_id,
            &followee.id,
            statement.as_deref(),
            state.now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop following a user (idempotent).
#[utoipa::path(delete, path = "/api/users/{username}/follow", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 204)))]
pub async fn unfollow(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.store.unfollow(&session.user_id, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who follows a user (newest first, at most 1,000).
#[utoipa::path(get, path = "/api/users/{username}/followers", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 200, body = Vec<UserSummary>)))]
pub async fn followers(
    State(state): State<AppState>,
    _auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<UserSummary>>> {
    Ok(Json(state.store.followers(&username).await?))
}

/// Whom a user follows (newest first, at most 1,000).
#[utoipa::path(get, path = "/api/users/{username}/following", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 200, body = Vec<UserSummary>)))]
pub async fn following(
    State(state): State<AppState>,
    _auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<UserSummary>>> {
    Ok(Json(state.store.following(&username).await?))
}
