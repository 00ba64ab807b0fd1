//! Rooms: create, the hallway, join, and every participant action.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sotto_proto::access::AccessVerb;
use sotto_proto::api::{
    AudiencePage, AudienceQuery, CreateRoomRequest, MAX_AUDIENCE_PAGE, RoomInviteRequest,
    StatementRequest,
};
use sotto_proto::channel::{SignedAccess, encode_payload};
use sotto_proto::ids::is_valid_text;
use sotto_proto::room::{RoomSummary, RoomView};
use sotto_proto::{ErrorCode, RoomId, UserId};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, OptionalJson, own_statement};
use super::{AppState, random_bytes};
use crate::bus::JoinNotApplied;
use crate::error::{ApiError, ApiResult};
use crate::rooms::Action;
use crate::store::RoomAccess;

impl AppState {
    /// Publishes the change.
    pub(crate) fn announce(&self, access: RoomAccess) {
        self.bus.publish(access.view, access.departed);
    }

    /// Publishes the change; returns the room as `user` is shown it
    /// ([`RoomView::seen_by`]).
    pub(crate) fn announce_to(&self, access: RoomAccess, user: &UserId) -> RoomView {
        let view = access.view.seen_by(user);
        self.announce(access);
        view
    }
}

/// How often a join waits 2 ms for the change before it to be published.
const JOIN_PUBLISH_TRIES: usize = 50;

/// Start a room; you are its host.
#[utoipa::path(post, path = "/api/rooms", tag = "rooms", security(("bearer" = [])),
    request_body = CreateRoomRequest,
    responses((status = 201, body = RoomView)))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiJson(req): ApiJson<CreateRoomRequest>,
) -> ApiResult<(StatusCode, Json<RoomView>)> {
    let description = req.description.unwrap_or_default();
    if !is_valid_text(&req.title, 1, 100) || !is_valid_text(&description, 0, 500) {
        return Err(ApiError::new(
            ErrorCode::InvalidRoom,
            "a title is 1–100 characters and a description at most 500, no control characters",
        ));
    }
    let id = RoomId::from_bytes(random_bytes());
    let view = state
        .store
        .create_room(
            &id,
            &session.user_id,
            &req.title,
            &description,
            req.kind,
            state.now(),
        )
        .await?;
    tracing::info!(room = id.short(), "room started");
    Ok((StatusCode::CREATED, Json(view)))
}

/// The hallway: live rooms you may enter, those with people you follow on stage first.
#[utoipa::path(get, path = "/api/rooms", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = Vec<RoomSummary>)))]
pub async fn hallway(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
) -> ApiResult<Json<Vec<RoomSummary>>> {
    Ok(Json(state.store.hallway(&session.user_id).await?))
}

/// A room's live state (members, or those who may enter): the stage, the
/// first 50 listeners, yourself, and the audience count; the rest of the
/// audience is paged at `/api/rooms/{room_id}/audience`. Raised hands and
/// stage invitations are shown to the stage (with every listener who has
/// one); a listener sees only their own.
#[utoipa::path(get, path = "/api/rooms/{room_id}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path)),
    responses((status = 200, body = RoomView)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(room_id): ApiPath<String>,
) -> ApiResult<Json<RoomView>> {
    Ok(Json(
        state
            .store
            .room_for(&RoomId(room_id), &session.user_id)
            .await?
            .seen_by(&session.user_id),
    ))
}

/// A page of a room's audience (listeners in order of joining), with an
/// optional search by the start of a username or display name. For
/// whoever may see the room. The room state on the session channel holds
/// the stage; a large audience is read here. Hands and stage invitations
/// show only to the stage (and each listener's own).
#[utoipa::path(get, path = "/api/rooms/{room_id}/audience", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path), AudienceQuery),
    responses((status = 200, body = AudiencePage)))]
pub async fn audience(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(room_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AudienceQuery>,
) -> ApiResult<Json<AudiencePage>> {
    let after = match query.after.as_deref() {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    "`after` is the `next` of a previous page",
                )
            })?,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_AUDIENCE_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "`limit` is 1–200",
        ));
    }
    if let Some(q) = &query.q
        && !is_valid_text(q, 1, 50)
    {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "`q` is 1–50 characters, no control characters",
        ));
    }
    let (members, total, next) = state
        .store
        .audience_page(
            &RoomId(room_id),
            &session.user_id,
            after,
            limit,
            query.q.as_deref(),
        )
        .await?;
    Ok(Json(AudiencePage {
        members,
        total,
        next: next.map(|n| n.to_string()),
    }))
}

/// Enter a room as a listener (idempotent).
#[utoipa::path(post, path = "/api/rooms/{room_id}/join", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path)),
    responses((status = 200, body = RoomView)))]
pub async fn join(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(room_id): ApiPath<String>,
) -> ApiResult<Json<RoomView>> {
    let joined = state
        .store
        .join_room(&RoomId(room_id), &session.user_id, state.now())
        .await?;
    // Joins commit one at a time but may reach the bus out of order: an
    // earlier one is published within moments (its handler publishes right
    // after its commit). Past that (its handler was cancelled between the
    // two), or with nothing published to apply it to: the room as it stands.
    for _ in 0..JOIN_PUBLISH_TRIES {
        match state.bus.publish_join(&joined) {
            Ok(view) => return Ok(Json(view.seen_by(&session.user_id))),
            Err(JoinNotApplied::NoView) => break,
            Err(JoinNotApplied::EarlierChangePending) => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }
    let view = state.store.load_room(&joined.room).await?;
    Ok(Json(state.announce_to(
        RoomAccess {
            view,
            departed: None,
        },
        &session.user_id,
    )))
}

/// An action on yourself: `raise-hand`, `lower-hand`, `accept-stage`,
/// `decline-stage`, `leave`, or (moderators) `end`.
#[utoipa::path(post, path = "/api/rooms/{room_id}/{action}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path), ("action" = String, Path, description = "raise-hand | lower-hand | accept-stage | decline-stage | leave | end")),
    responses((status = 200, body = RoomView)))]
pub async fn self_action(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath((room_id, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<RoomView>> {
    let action = Action::from_route(&action)
        .filter(|a| !a.takes_target())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such room action"))?;
    let access = state
        .store
        .act(
            &RoomId(room_id),
            &session.user_id,
            action,
            None,
            state.now(),
        )
        .await?;
    Ok(Json(state.announce_to(access, &session.user_id)))
}

/// An action on a participant: `invite-to-stage`, `move-to-audience`,
/// `mute`, `unmute` (yourself only), `make-moderator`, `remove`, `ban`.
#[utoipa::path(post, path = "/api/rooms/{room_id}/members/{user_id}/{action}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path), ("user_id" = String, Path),
        ("action" = String, Path, description = "invite-to-stage | move-to-audience | mute | unmute | make-moderator | remove | ban")),
    request_body(content = Option<StatementRequest>, description = "ban only: the ban signed by this session's device"),
    responses((status = 200, body = RoomView)))]
pub async fn member_action(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath((room_id, user_id, action)): ApiPath<(String, String, String)>,
    OptionalJson(body): OptionalJson<StatementRequest>,
) -> ApiResult<Json<RoomView>> {
    let action = Action::from_route(&action)
        .filter(|a| a.takes_target())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such member action"))?;
    let (room, target) = (RoomId(room_id), UserId(user_id));
    // A ban may carry the moderator's signed ban: the room's key
    // distributor then takes the key from the banned account on the
    // moderator's word, whatever this server does.
    let ban = match body.and_then(|b| b.statement) {
        Some(text) if action == Action::Ban => Some(own_statement(
            &session,
            &text,
            AccessVerb::Ban,
            Some(&room),
            &target,
        )?),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidAccessStatement,
                "only a ban carries a statement",
            ));
        }
        None => None,
    };
    let access = state
        .store
        .act(&room, &session.user_id, action, Some(&target), state.now())
        .await?;
    if let Some(statement) = ban {
        let chain = state.store.device_chain(&session.user_id).await?;
        state
            .e2ee
            .ban(
                &room,
                SignedAccess {
                    statement: encode_payload(&statement),
                    signer: session.user_id.clone(),
                    chain: encode_payload(&chain),
                },
            )
            .await;
    }
    Ok(Json(state.announce_to(access, &session.user_id)))
}

/// Let a user into a closed room (moderators).
#[utoipa::path(post, path = "/api/rooms/{room_id}/access", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path)),
    request_body = RoomInviteRequest,
    responses((status = 204)))]
pub async fn grant_access(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(room_id): ApiPath<String>,
    ApiJson(req): ApiJson<RoomInviteRequest>,
) -> ApiResult<StatusCode> {
    let room = RoomId(room_id);
    let target = state.store.user_by_username(&req.username).await?.id;
    let statement = req
        .statement
        .map(|text| own_statement(&session, &text, AccessVerb::Allow, Some(&room), &target))
        .transpose()?;
    state
        .store
        .grant_access(
            &room,
            &session.user_id,
            &target,
            statement.as_deref(),
            state.now(),
        )
        .await?;
    if statement.is_some() {
        // A listener already waiting gets its key now, not at its next
        // join request.
        let grants = state.store.access_grants(&room, &target).await?;
        state.e2ee.regrant(&room, &target, grants).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
