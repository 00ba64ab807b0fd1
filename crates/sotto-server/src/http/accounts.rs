//! Registration, login, sessions, the signed-in account and its devices,
//! invites.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sotto_proto::api::{AccountExport, DeleteAccountRequest};
use sotto_proto::api::{
    AddDeviceRequest, ChallengeRequest, ChallengeResponse, CreateInviteRequest, DeviceView,
    InviteCreated, LoginRequest, Me, RegisterRequest, RevokeDeviceRequest, SessionResponse,
    UpdateProfileRequest,
};
use sotto_proto::chain::{DeviceLink, LinkOp, parse_chain, verify_chain};
use sotto_proto::ids::{is_valid_text, is_valid_username};
use sotto_proto::keys::{
    DevicePublicKey, add_device_transcript, delete_account_transcript, encode_b64,
    login_transcript, register_transcript,
};
use sotto_proto::{DeviceId, ErrorCode, UserId};

use super::extract::{ApiJson, ApiPath, AuthRateLimit, AuthUser, secret_hash};
use super::{AppState, random_bytes, random_token};
use crate::error::{ApiError, ApiResult};
use crate::store::NewAccount;

fn check_key(key: &DevicePublicKey) -> ApiResult<()> {
    key.verifying_key().map(|_| ()).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidPublicKey,
            "not a valid Ed25519 public key",
        )
    })
}

fn check_signature(key: &DevicePublicKey, message: &[u8], signature: &str) -> ApiResult<()> {
    key.verify(message, signature)
        .map_err(|_| ApiError::new(ErrorCode::BadSignature, "the signature does not verify"))
}

fn bad_link(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidDeviceLink,
        format!("device chain link refused: {why}"),
    )
}

/// Checks that `link` (base64url) is the next link of `user`'s device chain,
/// doing `op` on `subject`, signed by `signer`. Returns its seq and bytes.
async fn next_link(
    state: &AppState,
    user: &UserId,
    link: &str,
    op: LinkOp,
    subject: &DevicePublicKey,
    signer: &DevicePublicKey,
) -> ApiResult<(u32, Vec<u8>)> {
    let bytes = sotto_proto::keys::decode_b64(link).map_err(bad_link)?;
    let new = DeviceLink::parse(&bytes).map_err(bad_link)?;
    if new.op != op || new.subject != *subject.as_bytes() || new.signer != *signer.as_bytes() {
        return Err(bad_link("it does not say what this request does"));
    }
    let stored = state.store.device_chain(user).await?;
    let mut links = if stored.is_empty() {
        Vec::new()
    } else {
        parse_chain(&stored).map_err(|_| ApiError::new(ErrorCode::Internal, "stored chain"))?
    };
    let current = if links.is_empty() {
        None
    } else {
        Some(verify_chain(&links).map_err(|_| ApiError::new(ErrorCode::Internal, "stored chain"))?)
    };
    if op == LinkOp::Revoke && current.is_some_and(|c| c.active() == [*subject.as_bytes()]) {
        return Err(ErrorCode::LastDevice.into());
    }
    if new.seq as usize != links.len() {
        return Err(ApiError::new(
            ErrorCode::DeviceChainConflict,
            "the link does not follow the account's current device chain",
        ));
    }
    links.push(new);
    verify_chain(&links).map_err(bad_link)?;
    Ok((links.len() as u32 - 1, bytes))
}

fn check_display_name(name: &str) -> ApiResult<()> {
    if is_valid_text(name, 1, 50) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidProfile,
            "a display name is 1–50 characters, no control characters",
        ))
    }
}

fn device_name(name: Option<&str>) -> ApiResult<String> {
    let name = name.unwrap_or("device");
    if is_valid_text(name, 1, 50) {
        Ok(name.to_string())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "a device name is 1–50 characters, not only spaces, no control characters",
        ))
    }
}

/// Create an account with an invite code.
#[utoipa::path(post, path = "/api/register", tag = "accounts",
    request_body = RegisterRequest,
    responses((status = 201, body = SessionResponse)))]
pub async fn register(
    State(state): State<AppState>,
    _limit: AuthRateLimit,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<SessionResponse>)> {
    if !is_valid_username(&req.username) {
        return Err(ApiError::new(
            ErrorCode::InvalidUsername,
            "a username is 3–20 characters of a-z, 0-9 and _",
        ));
    }
    check_display_name(&req.display_name)?;
    let device_name = device_name(req.device_name.as_deref())?;
    check_key(&req.device_public_key)?;
    if req.invite_code.is_empty() || req.invite_code.len() > 128 {
        return Err(ErrorCode::InviteNotFound.into());
    }
    check_signature(
        &req.device_public_key,
        &register_transcript(&req.invite_code, &req.username, &req.device_public_key),
        &req.signature,
    )?;
    let device_link = sotto_proto::keys::decode_b64(&req.device_link).map_err(bad_link)?;
    let genesis = DeviceLink::parse(&device_link).map_err(bad_link)?;
    if genesis.subject != *req.device_public_key.as_bytes() {
        return Err(bad_link("the first link must add the registering key"));
    }
    verify_chain(std::slice::from_ref(&genesis)).map_err(bad_link)?;
    // Clients need not check the first link's self-signature; the server
    // stores only well-formed chains, so it does.
    genesis.verify_signature().map_err(bad_link)?;
    let now = state.now();
    let token = random_token();
    let new = NewAccount {
        user_id: UserId::from_bytes(random_bytes()),
        username: req.username,
        display_name: req.display_name,
        device_id: DeviceId::from_bytes(random_bytes()),
        device_name,
        public_key: req.device_public_key,
        device_link,
        token_hash: secret_hash(&token),
        session_expires_at: now + state.session_ttl_ms(),
    };
    state
        .store
        .register(&secret_hash(&req.invite_code), &new, now)
        .await?;
    state
        .metrics
        .registrations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(user = new.user_id.short(), "account created");
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            token,
            expires_at: new.session_expires_at,
            user_id: new.user_id,
            device_id: new.device_id,
        }),
    ))
}

/// Ask for a login challenge for a device key.
#[utoipa::path(post, path = "/api/auth/challenge", tag = "accounts",
    request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse)))]
pub async fn challenge(
    State(state): State<AppState>,
    _limit: AuthRateLimit,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> ApiResult<Json<ChallengeResponse>> {
    check_key(&req.device_public_key)?;
    let now = state.now();
    let id = encode_b64(&random_bytes::<16>());
    let nonce = random_bytes::<32>();
    let expires_at = now + crate::config::CHALLENGE_TTL_MS;
    state
        .store
        .create_challenge(&id, &req.device_public_key, &nonce, expires_at)
        .await?;
    Ok(Json(ChallengeResponse {
        challenge_id: id,
        nonce: encode_b64(&nonce),
        expires_at,
    }))
}

/// Answer a challenge with the device's signature; get a session.
#[utoipa::path(post, path = "/api/auth/login", tag = "accounts",
    request_body = LoginRequest,
    responses((status = 200, body = SessionResponse)))]
pub async fn login(
    State(state): State<AppState>,
    _limit: AuthRateLimit,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<SessionResponse>> {
    if req.challenge_id.len() > 64 {
        return Err(ErrorCode::ChallengeInvalid.into());
    }
    let now = state.now();
    let (key, nonce) = state.store.take_challenge(&req.challenge_id, now).await?;
    check_signature(
        &key,
        &login_transcript(&req.challenge_id, &nonce, &key),
        &req.signature,
    )?;
    // Same answer for an unknown key as for a bad signature: a key is not
    // probed for whether it has an account.
    let (device_id, user_id) =
        state.store.device_by_key(&key).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::BadSignature, "the signature does not verify")
        })?;
    let token = random_token();
    let expires_at = now + state.session_ttl_ms();
    state
        .store
        .create_session(&secret_hash(&token), &user_id, &device_id, expires_at, now)
        .await?;
    state
        .metrics
        .logins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Json(SessionResponse {
        token,
        expires_at,
        user_id,
        device_id,
    }))
}

/// End this session.
#[utoipa::path(post, path = "/api/auth/logout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
) -> ApiResult<StatusCode> {
    state
        .store
        .revoke_session(&session.token_hash, state.now())
        .await?;
    state
        .revoke(
            crate::http::Revocation::Session(session.token_hash.clone()),
            &session.device_id,
            &session.device_key,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Me)))]
pub async fn me(State(state): State<AppState>, AuthUser(session): AuthUser) -> ApiResult<Json<Me>> {
    Ok(Json(state.store.me(&session.user_id).await?))
}

/// Change display name and/or bio.
#[utoipa::path(patch, path = "/api/me", tag = "accounts", security(("bearer" = [])),
    request_body = UpdateProfileRequest,
    responses((status = 200, body = Me)))]
pub async fn update_me(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> ApiResult<Json<Me>> {
    if let Some(name) = &req.display_name {
        check_display_name(name)?;
    }
    if req
        .bio
        .as_deref()
        .is_some_and(|bio| !is_valid_text(bio, 0, 300))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidProfile,
            "a bio is at most 300 characters, no control characters",
        ));
    }
    state
        .store
        .update_profile(
            &session.user_id,
            req.display_name.as_deref(),
            req.bio.as_deref(),
        )
        .await?;
    Ok(Json(state.store.me(&session.user_id).await?))
}

/// The account's device keys.
#[utoipa::path(get, path = "/api/me/devices", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<DeviceView>)))]
pub async fn devices(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
) -> ApiResult<Json<Vec<DeviceView>>> {
    Ok(Json(
        state
            .store
            .list_devices(&session.user_id, &session.device_id)
            .await?,
    ))
}

/// Authorize another device key, signed by this session's device and by the new one.
#[utoipa::path(post, path = "/api/me/devices", tag = "accounts", security(("bearer" = [])),
    request_body = AddDeviceRequest,
    responses((status = 201, body = DeviceView)))]
pub async fn add_device(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiJson(req): ApiJson<AddDeviceRequest>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    check_key(&req.device_public_key)?;
    let name = device_name(Some(&req.name))?;
    let transcript = add_device_transcript(
        &session.user_id.0,
        &session.device_key,
        &req.device_public_key,
    );
    check_signature(&session.device_key, &transcript, &req.authorizer_signature)?;
    check_signature(
        &req.device_public_key,
        &transcript,
        &req.new_device_signature,
    )?;
    let link = next_link(
        &state,
        &session.user_id,
        &req.device_link,
        LinkOp::Add,
        &req.device_public_key,
        &session.device_key,
    )
    .await?;
    let now = state.now();
    let id = DeviceId::from_bytes(random_bytes());
    state
        .store
        .add_device(
            &session.user_id,
            &id,
            &name,
            &req.device_public_key,
            (link.0, &link.1),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeviceView {
            id,
            name,
            public_key: req.device_public_key,
            created_at: now,
            current: false,
        }),
    ))
}

/// Revoke a device key and its sessions, with the chain link that says so
/// (signed by this session's device). Its open channels close at once.
#[utoipa::path(delete, path = "/api/me/devices/{device_id}", tag = "accounts", security(("bearer" = [])),
    params(("device_id" = String, Path)),
    request_body = RevokeDeviceRequest,
    responses((status = 204)))]
pub async fn revoke_device(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<RevokeDeviceRequest>,
) -> ApiResult<StatusCode> {
    let device = DeviceId(device_id);
    if !device.is_well_formed() {
        return Err(ErrorCode::DeviceNotFound.into());
    }
    let key = state.store.device_key(&session.user_id, &device).await?;
    let link = next_link(
        &state,
        &session.user_id,
        &req.device_link,
        LinkOp::Revoke,
        &key,
        &session.device_key,
    )
    .await?;
    state
        .store
        .revoke_device(
            &session.user_id,
            &device,
            Some((link.0, &link.1)),
            state.now(),
        )
        .await?;
    state
        .revoke(
            crate::http::Revocation::Device(device.clone()),
            &device,
            &key,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything stored about you, as JSON.
#[utoipa::path(get, path = "/api/me/export", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = AccountExport)))]
pub async fn export(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
) -> ApiResult<Json<AccountExport>> {
    Ok(Json(
        state
            .store
            .export(&session.user_id, &session.device_id, state.now())
            .await?,
    ))
}

/// Delete your account and every row about you (signed by this session's device).
#[utoipa::path(delete, path = "/api/me", tag = "accounts", security(("bearer" = [])),
    request_body = DeleteAccountRequest,
    responses((status = 204)))]
pub async fn delete_me(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiJson(req): ApiJson<DeleteAccountRequest>,
) -> ApiResult<StatusCode> {
    check_signature(
        &session.device_key,
        &delete_account_transcript(&session.user_id.0, &session.device_key),
        &req.signature,
    )?;
    let changed = state
        .store
        .delete_account(&session.user_id, state.now())
        .await?;
    for access in changed {
        state.announce(access);
    }
    tracing::info!(user = session.user_id.short(), "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Create an invite (administrators).
#[utoipa::path(post, path = "/api/invites", tag = "accounts", security(("bearer" = [])),
    request_body = CreateInviteRequest,
    responses((status = 201, body = InviteCreated)))]
pub async fn create_invite(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    ApiJson(req): ApiJson<CreateInviteRequest>,
) -> ApiResult<(StatusCode, Json<InviteCreated>)> {
    if !session.is_admin {
        return Err(ApiError::new(
            ErrorCode::AdminOnly,
            "only an administrator may create invites",
        ));
    }
    if !(1..=1000).contains(&req.uses) || !(60..=90 * 24 * 3600).contains(&req.expires_in_secs) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "uses is 1–1000 and expires_in_secs 60 s to 90 days",
        ));
    }
    let now = state.now();
    let expires_at = now + (req.expires_in_secs as i64) * 1000;
    let code = new_invite_code();
    state
        .store
        .create_invite(
            &secret_hash(&code),
            Some(&session.user_id),
            req.uses,
            expires_at,
            false,
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteCreated {
            url: state.invite_url(&code),
            code,
            uses: req.uses,
            expires_at,
        }),
    ))
}

/// A fresh invite code: 128 random bits as 32 lowercase hex digits (easy
/// to paste, and never starts with `-`, which a command line would take for
/// a flag).
pub fn new_invite_code() -> String {
    hex::encode(random_bytes::<16>())
}
