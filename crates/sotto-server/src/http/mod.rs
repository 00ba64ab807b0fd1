//! The HTTP API: routes, shared state, and the layers every request passes.

pub mod accounts;
pub mod body;
pub mod channel;
pub mod doc;
pub mod extract;
pub mod ops;
pub mod rooms;
pub mod ui;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngCore as _;
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::{DeviceId, ErrorCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bus::Bus;
use crate::config::{MAX_BODY_BYTES, ServerConfig};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{AuthedSession, Store};

/// A device or a session that may no longer speak on a session channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The device was revoked: all of its sessions end.
    Device(DeviceId),
    /// One session ended (logout), by the hash of its token.
    Session(Vec<u8>),
}

impl AppState {
    /// Ends what `revocation` names at once: its open channels close (the
    /// E2EE relay drops the device from every live room's stage group and
    /// audience) — revocation must not wait for a reconnect.
    pub async fn revoke(&self, revocation: Revocation, device: &DeviceId, key: &DevicePublicKey) {
        self.e2ee.evict_device(device, key).await;
        // No channel open anywhere: nothing to close.
        if self.revocations.send(revocation).is_err() {
            tracing::debug!("revocation: no open channel");
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    /// The media plane, when this server runs one.
    pub media: Option<crate::media::MediaPlane>,
    /// The E2EE relay (public state only).
    pub e2ee: crate::e2ee_relay::E2eeRelay,
    /// Revoked devices and ended sessions: their open channels close.
    pub revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// Set when the server stops: open session channels tell their clients
    /// to come back, then close.
    pub draining: Arc<tokio::sync::watch::Sender<bool>>,
    base_url: Arc<str>,
    openapi: Arc<str>,
}

impl AppState {
    pub fn new(
        store: Store,
        config: Arc<ServerConfig>,
        base_url: String,
        media: Option<crate::media::MediaPlane>,
        e2ee: crate::e2ee_relay::E2eeRelay,
    ) -> Self {
        AppState {
            store,
            media,
            e2ee,
            revocations: tokio::sync::broadcast::channel(64).0,
            draining: Arc::new(tokio::sync::watch::channel(false).0),
            limiter: Arc::new(RateLimiter::new(config.auth_per_minute)),
            config,
            bus: Bus::default(),
            metrics: Arc::new(Metrics::default()),
            base_url: base_url.into(),
            openapi: openapi_json().into(),
        }
    }

    pub fn now(&self) -> i64 {
        self.config.clock.now_ms()
    }

    pub fn session_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.session_ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    pub fn base_url(&self) -> String {
        self.base_url.to_string()
    }

    pub fn invite_url(&self, code: &str) -> String {
        format!("{}/invite/{}", self.base_url, code)
    }

    pub fn openapi_document(&self) -> String {
        self.openapi.to_string()
    }

    pub async fn authenticate(&self, token: &str) -> ApiResult<AuthedSession> {
        self.store
            .authenticate(&extract::secret_hash(token), self.now())
            .await
    }
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// A session token: 256 random bits, base64url.
pub fn random_token() -> String {
    sotto_proto::keys::encode_b64(&random_bytes::<32>())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "sotto",
        description = "Live audio rooms the server operators cannot hear. Every error body is \
                       {\"error\":{\"code\":\"…\",\"message\":\"…\"}} with a stable code; \
                       each operation lists the codes it can answer, by HTTP status. 429 and 503 \
                       come with Retry-After (seconds): 503 database_unavailable changed nothing \
                       and may be retried. Request fields carry the limits the server enforces.",
        license(name = "AGPL-3.0-or-later")
    ),
    modifiers(&BearerAuth),
    components(schemas(sotto_proto::ErrorCode, sotto_proto::ErrorResponse))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Every documented route, and the document that describes exactly them.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::challenge))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(
            accounts::me,
            accounts::update_me,
            accounts::delete_me
        ))
        .routes(routes!(accounts::export))
        .routes(routes!(accounts::devices, accounts::add_device))
        .routes(routes!(accounts::revoke_device))
        .routes(routes!(accounts::create_invite))
        .routes(routes!(users::profile))
        .routes(routes!(users::follow, users::unfollow))
        .routes(routes!(users::followers))
        .routes(routes!(users::following))
        .routes(routes!(rooms::create, rooms::hallway))
        .routes(routes!(rooms::get))
        .routes(routes!(rooms::audience))
        .routes(routes!(rooms::join))
        .routes(routes!(rooms::grant_access))
        .routes(routes!(rooms::self_action))
        .routes(routes!(rooms::member_action))
        .routes(routes!(channel::upgrade))
}

/// The OpenAPI document served at `/api/openapi.json`.
pub fn openapi_json() -> String {
    let (_, api) = api_routes().split_for_parts();
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    doc::complete(&mut doc);
    doc::to_pretty_json(&doc)
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api.route("/api/openapi.json", get(ops::openapi_json))
        .route("/invite/{code}", get(ops::invite_page))
        .fallback(not_found_or_client)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::new(ErrorCode::Internal, "the server could not complete this").into_response()
        }))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// The web client's files and pages (GET outside `/api/`), else 404.
async fn not_found_or_client(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    match ui::serve(&method, &uri, &headers) {
        Some(page) => page,
        None => ApiError::new(ErrorCode::NotFound, "no such route").into_response(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics.count_status(response.status().as_u16());
    response
}
