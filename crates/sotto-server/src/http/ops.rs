//! Health, metrics, the API document, and the page an invite link opens.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use sotto_proto::ErrorCode;
use sotto_proto::api::Health;

use super::AppState;
use super::extract::{ApiPath, secret_hash};

/// Liveness: the database answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(state.store.pool()).await {
        Ok(_) => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        Err(e) => {
            let mut err = crate::error::ApiError::from(e);
            if err.code != ErrorCode::Unavailable {
                err = crate::error::ApiError::new(
                    ErrorCode::DatabaseUnavailable,
                    "the database does not answer",
                );
                err.retry_after = Some(crate::error::DATABASE_RETRY_AFTER_SECS);
            }
            err.into_response()
        }
    }
}

/// Counters in Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE ended_at IS NULL")
        .fetch_one(state.store.pool())
        .await
        .unwrap_or(-1);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(live, state.media.as_ref()),
    )
        .into_response()
}

/// The OpenAPI document of this API.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_document(),
    )
        .into_response()
}

/// What an invite link shows: whether it is still good, and how to use it.
/// Everything is inline: the page loads nothing from anywhere.
pub async fn invite_page(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiPath(code): ApiPath<String>,
) -> Response {
    let status = if code.len() > 128 {
        Err(ErrorCode::InviteNotFound)
    } else {
        match state
            .store
            .invite_usable(&secret_hash(&code), state.now())
            .await
        {
            Ok(s) => s,
            Err(e) => Err(e.code),
        }
    };
    // With the web client built in, the link opens it (it signs up in the
    // browser); the status still says whether the invite can be used.
    let client_status = match &status {
        Ok(()) => StatusCode::OK,
        Err(code) => StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::NOT_FOUND),
    };
    if let Some(page) = super::ui::page(client_status, &headers) {
        return page;
    }
    let server = state.base_url();
    let (http_status, body) = match status {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "<p>This invite is valid. Create your account from a terminal:</p>\
                 <pre>sotto register --server {server} --invite {code} --username NAME --profile ~/.sotto</pre>",
                server = escape(&server),
                code = escape(&code),
            ),
        ),
        Err(code) => (
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::NOT_FOUND),
            format!(
                "<p>This invite cannot be used: <code>{}</code>.</p>",
                code.as_str()
            ),
        ),
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>sotto invite</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}\
         pre{{background:#f3f3f3;padding:1rem;overflow-x:auto}}</style></head>\
         <body><h1>sotto</h1>{body}</body></html>"
    );
    (
        http_status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(page),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
