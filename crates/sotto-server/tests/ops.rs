//! The API document, health, metrics, TLS and the refusal to serve plain
//! HTTP beyond loopback.

mod common;

use common::{Db, TestServer, raw_http};
use sotto_client::{Client, Profile};
use sotto_server::TlsSetting;

/// `/api/openapi.json` is served, matches the committed `docs/openapi.json`
/// (run with `UPDATE_OPENAPI=1` to rewrite it), and documents every route
/// the client library calls.
#[tokio::test]
async fn openapi_document() {
    let srv = TestServer::start(Db::Sqlite).await;
    let served = raw_http()
        .get(format!("{}/api/openapi.json", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served: serde_json::Value = served.json().await.unwrap();
    assert_eq!(
        served["openapi"].as_str().unwrap().chars().next(),
        Some('3')
    );
    let paths = served["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/register", "post"),
        ("/api/auth/challenge", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/logout", "post"),
        ("/api/me", "get"),
        ("/api/me", "patch"),
        ("/api/me/devices", "get"),
        ("/api/me/devices", "post"),
        ("/api/me/devices/{device_id}", "delete"),
        ("/api/invites", "post"),
        ("/api/users/{username}", "get"),
        ("/api/users/{username}/follow", "put"),
        ("/api/users/{username}/follow", "delete"),
        ("/api/users/{username}/followers", "get"),
        ("/api/users/{username}/following", "get"),
        ("/api/rooms", "get"),
        ("/api/rooms", "post"),
        ("/api/rooms/{room_id}", "get"),
        ("/api/rooms/{room_id}/join", "post"),
        ("/api/rooms/{room_id}/access", "post"),
        ("/api/rooms/{room_id}/{action}", "post"),
        ("/api/rooms/{room_id}/members/{user_id}/{action}", "post"),
        ("/api/ws", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} undocumented"))[method];
        assert!(op.is_object(), "{method} {path} undocumented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }
    // Every error code is in the schema.
    let codes = &served["components"]["schemas"]["ErrorCode"]["enum"];
    for code in sotto_proto::ErrorCode::ALL {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code.as_str()),
            "{code} missing"
        );
    }
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = sotto_server::http::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path)
        .expect("docs/openapi.json (UPDATE_OPENAPI=1 writes it)");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&committed).unwrap(),
        served,
        "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p sotto-server --test ops"
    );
    srv.stop().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let srv = TestServer::start(Db::Sqlite).await;
    let http = raw_http();
    let r = http
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let (alice, _) = srv.user("alice").await;
    alice
        .create_room("Counted", sotto_proto::room::RoomKind::Open, None)
        .await
        .unwrap();
    let _ = http
        .get(format!("{}/api/nope", srv.url))
        .send()
        .await
        .unwrap();
    let text = http
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(value("sotto_registrations_total"), 1.0);
    assert_eq!(value("sotto_rooms_live"), 1.0);
    assert!(value("sotto_http_responses_total{class=\"4xx\"}") >= 1.0);
    assert!(value("sotto_http_responses_total{class=\"2xx\"}") >= 3.0);
    assert!(
        !text.contains("alice") && !text.contains("Counted"),
        "metrics carry no identifiers"
    );
    srv.stop().await;
}

#[tokio::test]
async fn plain_http_is_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.http = "0.0.0.0:0".parse().unwrap();
    let err = match sotto_server::start(config).await {
        Ok(_) => panic!("started without TLS on 0.0.0.0"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--tls-self-signed"), "{err}");
}

#[tokio::test]
async fn self_signed_tls_with_pinning() {
    let srv = TestServer::start_with(Db::Sqlite, |cfg| cfg.tls = TlsSetting::SelfSigned).await;
    assert!(srv.url.starts_with("https://"));
    let (ca, fingerprint) = srv.server.as_ref().unwrap().pinned_cert.clone().unwrap();
    let ca = ca.unwrap();
    let pem = std::fs::read(&ca).unwrap();
    let der = sotto_server::tls::read_certs(&ca).unwrap();
    assert_eq!(sotto_server::tls::fingerprint(&der[0]), fingerprint);
    assert!(
        !String::from_utf8_lossy(&pem).contains("PRIVATE KEY"),
        "the CA file holds no key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = srv.dir.path().join("tls/key.pem");
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Pinned: registration, login and the session channel work over TLS.
    let code = srv.invite(1).await;
    let mut profile = Profile::open_or_create(&srv.dir.path().join("tls-user")).unwrap();
    let mut client = Client::new(&srv.url, Some(&ca)).unwrap();
    client
        .register(&mut profile, &code, "tlsuser", "T")
        .await
        .unwrap();
    client.login(&profile).await.unwrap();
    let channel = sotto_client::Channel::connect(&client).await.unwrap();
    channel.close().await;

    // Unpinned (system roots): the self-signed certificate is refused.
    let unpinned = Client::new(&srv.url, None).unwrap();
    let r = unpinned.me().await;
    assert!(
        matches!(r, Err(sotto_client::ClientError::Http(_))),
        "{r:?}"
    );

    // Pinned to another CA: refused.
    let other = tempfile::tempdir().unwrap();
    sotto_server::tls::prepare(&TlsSetting::SelfSigned, other.path(), &[]).unwrap();
    let wrong = Client::new(&srv.url, Some(&other.path().join("tls/ca.pem"))).unwrap();
    assert!(matches!(
        wrong.me().await,
        Err(sotto_client::ClientError::Http(_))
    ));

    // The certificate survives a restart (same fingerprint).
    let again = sotto_server::tls::prepare(&TlsSetting::SelfSigned, srv.dir.path(), &[])
        .unwrap()
        .unwrap();
    assert_eq!(again.fingerprint, fingerprint);
    srv.stop().await;
}
