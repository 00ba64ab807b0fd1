//! The web client, embedded at build time (`build.rs` reads `web/dist`).
//!
//! Every page is served with a Content-Security-Policy that lets it load
//! and contact nothing but this origin: scripts, styles, the wasm core, the
//! workers, the session channel. Paths that are not files get `index.html`
//! (the client routes by path); `/api/` never does.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The policy of every page of the web client. `'wasm-unsafe-eval'` lets
/// the page compile its own WebAssembly (the client core), nothing else;
/// `blob:` media is the microphone level meter's and the account export's.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self'; worker-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether this binary carries the web client.
pub fn embedded() -> bool {
    asset("index.html").is_some()
}

fn asset(path: &str) -> Option<&'static [u8]> {
    assets::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "webmanifest") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn respond(
    status: StatusCode,
    path: &str,
    bytes: &'static [u8],
    gzip: Option<&'static [u8]>,
) -> Response {
    // Vite names what it builds under assets/ by content hash: those never
    // change; the page itself is checked every time.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    // (For HEAD, the server sends the headers only.)
    let mut response = (status, Body::from(gzip.unwrap_or(bytes))).into_response();
    let headers = response.headers_mut();
    if gzip.is_some() {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The gzipped copy of `path` (made by `scripts/web-build`), if the
/// browser takes gzip.
fn gzipped(path: &str, headers: &HeaderMap) -> Option<&'static [u8]> {
    let accepts = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next() == Some("gzip") && parts.all(|p| p != "q=0" && p != "q=0.0")
        });
    if !accepts {
        return None;
    }
    asset(&format!("{path}.gz"))
}

/// The client's page with `status` (an invite link that cannot be used is
/// still the page, with its status), if the client is embedded.
pub fn page(status: StatusCode, headers: &HeaderMap) -> Option<Response> {
    asset("index.html")
        .map(|bytes| respond(status, "index.html", bytes, gzipped("index.html", headers)))
}

/// What a GET outside `/api/` finds: a file of the client, or its page for
/// a path the client routes (no dot in the last segment). None: not ours.
pub fn serve(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    if !(method == Method::HEAD || method == Method::GET) {
        return None;
    }
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return None;
    }
    if let Some(bytes) = asset(path).filter(|_| !path.is_empty() && !path.ends_with(".gz")) {
        return Some(respond(StatusCode::OK, path, bytes, gzipped(path, headers)));
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if last.contains('.') {
        return None;
    }
    match asset("index.html") {
        Some(bytes) => Some(respond(
            StatusCode::OK,
            "index.html",
            bytes,
            gzipped("index.html", headers),
        )),
        None if path.is_empty() => Some(not_built()),
        None => None,
    }
}

/// `/` of a binary built without the web client.
fn not_built() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        "This sotto server was built without its web client. Build it with `scripts/serve` \
         (or `scripts/web-build`, then `cargo build --release -p sotto`). The API is under /api/.\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_never_the_page() {
        for path in ["/api", "/api/", "/api/nothing", "/api/rooms/x"] {
            let uri: Uri = path.parse().unwrap();
            assert!(
                serve(&Method::GET, &uri, &HeaderMap::new()).is_none(),
                "{path}"
            );
        }
        let uri: Uri = "/room/abc".parse().unwrap();
        assert!(serve(&Method::POST, &uri, &HeaderMap::new()).is_none());
        let uri: Uri = "/missing.js".parse().unwrap();
        assert!(serve(&Method::GET, &uri, &HeaderMap::new()).is_none());
    }

    #[test]
    fn client_routes_get_the_page_with_the_policy() {
        let uri: Uri = "/room/abc".parse().unwrap();
        match serve(&Method::GET, &uri, &HeaderMap::new()) {
            Some(r) if embedded() => {
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(
                    r.headers()[header::CONTENT_SECURITY_POLICY]
                        .to_str()
                        .unwrap(),
                    PAGE_CSP
                );
            }
            Some(_) => panic!("a client route without an embedded client"),
            None => assert!(!embedded()),
        }
    }
}
