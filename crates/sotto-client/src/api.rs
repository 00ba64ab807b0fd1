//! The HTTP API, one method per endpoint.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sotto_proto::access::{AccessVerb, sign_access};
use sotto_proto::api::{
    AddDeviceRequest, AudiencePage, AudienceQuery, ChallengeRequest, ChallengeResponse,
    CreateInviteRequest, CreateRoomRequest, DeviceView, InviteCreated, LoginRequest, Me,
    Profile as UserProfile, RegisterRequest, RoomInviteRequest, SessionResponse, StatementRequest,
    UpdateProfileRequest, UserSummary,
};
use sotto_proto::keys::{decode_b64, login_transcript, register_transcript};
use sotto_proto::room::{RoomKind, RoomSummary, RoomView};
use sotto_proto::{ErrorCode, ErrorResponse, RoomId, UserId};

use crate::{ClientError, Profile};

/// A connection to one server, signed in or not.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token: Option<String>,
    /// The signed-in device's key: signs follows, allows and bans
    /// (`sotto_proto::access`) so that rooms' key distributors can check
    /// them.
    signer: Option<std::sync::Arc<ed25519_dalek::SigningKey>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `server` is `http(s)://host:port`; `ca` pins the server's certificate.
    pub fn new(server: &str, ca: Option<&Path>) -> Result<Client, ClientError> {
        Self::build(server, ca, true)
    }

    /// As [`new`](Self::new), but keeping no idle connection between
    /// requests: for load generators that hold thousands of accounts in one
    /// process (each idle connection is a file descriptor on both ends).
    pub fn without_idle_connections(server: &str) -> Result<Client, ClientError> {
        Self::build(server, None, false)
    }

    fn build(server: &str, ca: Option<&Path>, keep_idle: bool) -> Result<Client, ClientError> {
        // reqwest's rustls needs a process-wide provider even for plain HTTP;
        // ours is aws-lc-rs. Installing twice is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let base = server.trim_end_matches('/').to_string();
        let url = url::Url::parse(&base)
            .map_err(|e| ClientError::Profile(format!("bad server URL: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sotto/", env!("CARGO_PKG_VERSION")));
        if !keep_idle {
            builder = builder.pool_max_idle_per_host(0);
        }
        let tls = match url.scheme() {
            "https" => {
                let config = crate::tls::client_config(ca)?;
                builder = builder.use_preconfigured_tls(config.clone());
                Some(std::sync::Arc::new(config))
            }
            "http" => None,
            other => return Err(ClientError::Profile(format!("unsupported scheme {other}"))),
        };
        Ok(Client {
            base,
            http: builder.build()?,
            tls,
            token: None,
            signer: None,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    pub(crate) fn tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// One request; any non-2xx answer becomes [`ClientError::Api`].
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_str("null")
                .map_err(|_| ClientError::UnexpectedResponse { status: 204 });
        }
        response
            .json::<T>()
            .await
            .map_err(|_| ClientError::UnexpectedResponse {
                status: status.as_u16(),
            })
    }

    /// Like [`Client::request`] for endpoints that answer `204 No Content`.
    pub async fn request_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        match response.json::<ErrorResponse>().await {
            Ok(err) => Err(ClientError::Api {
                status: status.as_u16(),
                code: err.error.code,
                message: err.error.message,
            }),
            Err(_) => Err(ClientError::UnexpectedResponse {
                status: status.as_u16(),
            }),
        }
    }

    // ---- accounts ----

    /// Creates an account for `profile`'s device key and signs in.
    pub async fn register(
        &mut self,
        profile: &mut Profile,
        invite_code: &str,
        username: &str,
        display_name: &str,
    ) -> Result<SessionResponse, ClientError> {
        let key = profile.public_key();
        let req = RegisterRequest {
            invite_code: invite_code.to_string(),
            username: username.to_string(),
            display_name: display_name.to_string(),
            device_public_key: key,
            device_name: Some("sotto cli".into()),
            signature: profile.sign(&register_transcript(invite_code, username, &key)),
            device_link: sotto_proto::keys::encode_b64(
                &profile
                    .sign_link(None, sotto_proto::chain::LinkOp::Add, &key)
                    .to_bytes(),
            ),
        };
        let session: SessionResponse = self
            .request(Method::POST, "/api/register", Some(&req))
            .await?;
        self.token = Some(session.token.clone());
        self.signer = Some(std::sync::Arc::new(profile.signing_key().clone()));
        profile.info.server = Some(self.base.clone());
        profile.info.username = Some(username.to_string());
        profile.info.user_id = Some(session.user_id.clone());
        profile.info.device_id = Some(session.device_id.clone());
        profile.save()?;
        Ok(session)
    }

    /// Signs in with `profile`'s device key (challenge and signature).
    pub async fn login(&mut self, profile: &Profile) -> Result<SessionResponse, ClientError> {
        let key = profile.public_key();
        let challenge: ChallengeResponse = self
            .request(
                Method::POST,
                "/api/auth/challenge",
                Some(&ChallengeRequest {
                    device_public_key: key,
                }),
            )
            .await?;
        let nonce = decode_b64(&challenge.nonce)
            .map_err(|_| ClientError::UnexpectedResponse { status: 200 })?;
        let req = LoginRequest {
            signature: profile.sign(&login_transcript(&challenge.challenge_id, &nonce, &key)),
            challenge_id: challenge.challenge_id,
        };
        let session: SessionResponse = self
            .request(Method::POST, "/api/auth/login", Some(&req))
            .await?;
        self.token = Some(session.token.clone());
        self.signer = Some(std::sync::Arc::new(profile.signing_key().clone()));
        Ok(session)
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        self.request_empty::<()>(Method::POST, "/api/auth/logout", None)
            .await
    }

    pub async fn me(&self) -> Result<Me, ClientError> {
        self.request::<(), _>(Method::GET, "/api/me", None).await
    }

    pub async fn update_me(&self, req: &UpdateProfileRequest) -> Result<Me, ClientError> {
        self.request(Method::PATCH, "/api/me", Some(req)).await
    }

    pub async fn export(&self) -> Result<sotto_proto::api::AccountExport, ClientError> {
        self.request::<(), _>(Method::GET, "/api/me/export", None)
            .await
    }

    /// Deletes the account; signed by `profile`'s device (the session's).
    pub async fn delete_account(&self, profile: &Profile) -> Result<(), ClientError> {
        let me = self.me().await?;
        let transcript =
            sotto_proto::keys::delete_account_transcript(&me.id.0, &profile.public_key());
        let req = sotto_proto::api::DeleteAccountRequest {
            signature: profile.sign(&transcript),
        };
        self.request_empty(Method::DELETE, "/api/me", Some(&req))
            .await
    }

    pub async fn devices(&self) -> Result<Vec<DeviceView>, ClientError> {
        self.request::<(), _>(Method::GET, "/api/me/devices", None)
            .await
    }

    pub async fn add_device(&self, req: &AddDeviceRequest) -> Result<DeviceView, ClientError> {
        self.request(Method::POST, "/api/me/devices", Some(req))
            .await
    }

    /// The signed-in account's device chain, as the server serves it
    /// (parsed, not verified).
    pub async fn own_chain(&self) -> Result<Vec<sotto_proto::chain::DeviceLink>, ClientError> {
        let me = self.me().await?;
        let profile = self.profile(&me.username).await?;
        let bytes = decode_b64_long(&profile.device_chain)?;
        sotto_proto::chain::parse_chain(&bytes)
            .map_err(|_| ClientError::UnexpectedResponse { status: 200 })
    }

    /// What the server says of this account's devices: its chain (bytes,
    /// not verified) and the keys of the devices it lists, for
    /// `RoomCrypto::check_own_devices`.
    /// `username` is this account's (two requests, not three).
    pub async fn own_devices_as_served(
        &self,
        username: &str,
    ) -> Result<(Vec<u8>, Vec<[u8; 32]>), ClientError> {
        let chain = decode_b64_long(&self.profile(username).await?.device_chain)?;
        let listed = self
            .devices()
            .await?
            .iter()
            .map(|d| *d.public_key.as_bytes())
            .collect();
        Ok((chain, listed))
    }

    /// Adds `new_device`'s key to the account: signed by `profile` (this
    /// session's device) and by the new device, with the chain link.
    pub async fn add_device_signed(
        &self,
        profile: &Profile,
        new_device: &Profile,
        name: &str,
    ) -> Result<DeviceView, ClientError> {
        let me = self.me().await?;
        let chain = self.own_chain().await?;
        let key = new_device.public_key();
        let t = sotto_proto::keys::add_device_transcript(&me.id.0, &profile.public_key(), &key);
        let link = profile.sign_link(chain.last(), sotto_proto::chain::LinkOp::Add, &key);
        let req = AddDeviceRequest {
            device_public_key: key,
            name: name.to_string(),
            authorizer_signature: profile.sign(&t),
            new_device_signature: new_device.sign(&t),
            device_link: sotto_proto::keys::encode_b64(&link.to_bytes()),
        };
        self.add_device(&req).await
    }

    /// Revokes one of the account's devices, signing the chain link with
    /// `profile` (this session's device).
    pub async fn revoke_device(
        &self,
        profile: &Profile,
        device: &DeviceView,
    ) -> Result<(), ClientError> {
        let chain = self.own_chain().await?;
        let link = profile.sign_link(
            chain.last(),
            sotto_proto::chain::LinkOp::Revoke,
            &device.public_key,
        );
        let req = sotto_proto::api::RevokeDeviceRequest {
            device_link: sotto_proto::keys::encode_b64(&link.to_bytes()),
        };
        self.request_empty(
            Method::DELETE,
            &format!("/api/me/devices/{}", device.id),
            Some(&req),
        )
        .await
    }

    pub async fn create_invite(
        &self,
        uses: u32,
        expires_in_secs: u64,
    ) -> Result<InviteCreated, ClientError> {
        self.request(
            Method::POST,
            "/api/invites",
            Some(&CreateInviteRequest {
                uses,
                expires_in_secs,
            }),
        )
        .await
    }

    // ---- users ----

    pub async fn profile(&self, username: &str) -> Result<UserProfile, ClientError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/users/{}", path_segment(username)),
            None,
        )
        .await
    }

    /// Follows `username`, with the follow signed by this device (so it
    /// lets them into social rooms this account hosts or moderates).
    pub async fn follow(&self, username: &str) -> Result<(), ClientError> {
        let statement = match &self.signer {
            Some(_) => {
                let id = self.profile(username).await?.id;
                self.sign_access(AccessVerb::Follow, "", &id)
            }
            None => None,
        };
        self.request_empty(
            Method::PUT,
            &format!("/api/users/{}/follow", path_segment(username)),
            Some(&StatementRequest { statement }),
        )
        .await
    }

    /// An access statement signed by the signed-in device (None before
    /// signing in with a profile).
    fn sign_access(&self, verb: AccessVerb, room: &str, target: &UserId) -> Option<String> {
        let key = self.signer.as_ref()?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Some(sotto_proto::keys::encode_b64(&sign_access(
            key, verb, room, target, now_ms,
        )))
    }

    pub async fn unfollow(&self, username: &str) -> Result<(), ClientError> {
        self.request_empty::<()>(
            Method::DELETE,
            &format!("/api/users/{}/follow", path_segment(username)),
            None,
        )
        .await
    }

    pub async fn followers(&self, username: &str) -> Result<Vec<UserSummary>, ClientError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/users/{}/followers", path_segment(username)),
            None,
        )
        .await
    }

    pub async fn following(&self, username: &str) -> Result<Vec<UserSummary>, ClientError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/users/{}/following", path_segment(username)),
            None,
        )
        .await
    }

    // ---- rooms ----

    pub async fn create_room(
        &self,
        title: &str,
        kind: RoomKind,
        description: Option<&str>,
    ) -> Result<RoomView, ClientError> {
        let req = CreateRoomRequest {
            title: title.to_string(),
            kind,
            description: description.map(str::to_string),
        };
        self.request(Method::POST, "/api/rooms", Some(&req)).await
    }

    pub async fn hallway(&self) -> Result<Vec<RoomSummary>, ClientError> {
        self.request::<(), _>(Method::GET, "/api/rooms", None).await
    }

    pub async fn room(&self, room: &RoomId) -> Result<RoomView, ClientError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/rooms/{}", path_segment(&room.0)),
            None,
        )
        .await
    }

    /// A page of the room's audience (see [`AudienceQuery`]).
    pub async fn audience(
        &self,
        room: &RoomId,
        query: &AudienceQuery,
    ) -> Result<AudiencePage, ClientError> {
        let mut params = Vec::new();
        if let Some(a) = &query.after {
            params.push(format!("after={}", path_segment(a)));
        }
        if let Some(l) = query.limit {
            params.push(format!("limit={l}"));
        }
        if let Some(q) = &query.q {
            params.push(format!("q={}", path_segment(q)));
        }
        let mut path = format!("/api/rooms/{}/audience", path_segment(&room.0));
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        self.request::<(), _>(Method::GET, &path, None).await
    }

    pub async fn join(&self, room: &RoomId) -> Result<RoomView, ClientError> {
        self.request::<(), _>(
            Method::POST,
            &format!("/api/rooms/{}/join", path_segment(&room.0)),
            None,
        )
        .await
    }

    /// An action on yourself: `raise-hand`, `lower-hand`, `accept-stage`,
    /// `decline-stage`, `leave`, `end`.
    pub async fn room_action(&self, room: &RoomId, action: &str) -> Result<RoomView, ClientError> {
        let path = format!(
            "/api/rooms/{}/{}",
            path_segment(&room.0),
            path_segment(action)
        );
        self.request::<(), _>(Method::POST, &path, None).await
    }

    /// An action on a participant: `invite-to-stage`, `move-to-audience`,
    /// `mute`, `unmute`, `make-moderator`, `remove`, `ban`.
    pub async fn member_action(
        &self,
        room: &RoomId,
        user: &UserId,
        action: &str,
    ) -> Result<RoomView, ClientError> {
        let path = format!(
            "/api/rooms/{}/members/{}/{}",
            path_segment(&room.0),
            path_segment(&user.0),
            path_segment(action)
        );
        // A ban is signed: the room's key distributor then takes the key
        // from the banned account whatever the server does.
        let statement = if action == "ban" {
            self.sign_access(AccessVerb::Ban, room.as_str(), user)
        } else {
            None
        };
        match statement {
            Some(statement) => {
                let body = StatementRequest {
                    statement: Some(statement),
                };
                self.request(Method::POST, &path, Some(&body)).await
            }
            None => self.request::<(), _>(Method::POST, &path, None).await,
        }
    }

    /// Lets `username` into a closed room, with the allow signed by this
    /// device (the room's key distributor seals the key only on it).
    pub async fn grant_access(&self, room: &RoomId, username: &str) -> Result<(), ClientError> {
        let path = format!("/api/rooms/{}/access", path_segment(&room.0));
        let statement = match &self.signer {
            Some(_) => {
                let id = self.profile(username).await?.id;
                self.sign_access(AccessVerb::Allow, room.as_str(), &id)
            }
            None => None,
        };
        self.request_empty(
            Method::POST,
            &path,
            Some(&RoomInviteRequest {
                username: username.to_string(),
                statement,
            }),
        )
        .await
    }
}

/// Percent-encodes everything but unreserved characters, so no input can
/// change the path's shape.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether an error is the API refusing with `code`.
pub fn is_code(result: &Result<impl Sized, ClientError>, code: ErrorCode) -> bool {
    matches!(result, Err(e) if e.code() == Some(code))
}

/// Decodes a base64url field that may be longer than a key (a device chain).
fn decode_b64_long(text: &str) -> Result<Vec<u8>, ClientError> {
    sotto_proto::channel::decode_payload(text)
        .map_err(|_| ClientError::UnexpectedResponse { status: 200 })
}
