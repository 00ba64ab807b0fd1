//! JSON request bodies: read, checked to be a JSON object, then turned into
//! the request type. What is refused is said in plain words with the field's
//! name ("field `title` is missing", "`kind` must be one of open, social,
//! closed"), never in serde's or axum's own wording, which names Rust types
//! and parser internals.

use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use sotto_proto::ErrorCode;

use crate::config::MAX_BODY_BYTES;
use crate::error::ApiError;

/// Reads the body of `req` and parses it as a JSON object of `T`.
pub async fn read<T, S>(req: axum::extract::Request, state: &S) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    parse_value(read_value(req, state).await?)
}

/// Reads the body of `req` as JSON, whatever its shape.
pub async fn read_value<S>(
    req: axum::extract::Request,
    state: &S,
) -> Result<serde_json::Value, ApiError>
where
    S: Send + Sync,
{
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(too_large)?;
    json(&bytes)
}

/// Parses `bytes` as a JSON object of `T`.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_value(json(bytes)?)
}

fn json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = if e.is_eof() {
            "the body is not valid JSON: it ends too early".to_string()
        } else {
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        };
        ApiError::new(ErrorCode::MalformedRequest, message)
    })
}

/// `value` as `T`, if it is a JSON object (an array would fill a struct by
/// position).
pub fn parse_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "the body must be a JSON object",
        ));
    }
    let mut value = value;
    whole_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| refused(e.path(), e.inner()))
}

/// Writes `3.0` as `3`: JSON Schema, and so the API document, counts a
/// number without a fraction as an integer, but serde takes only `3` for an
/// integer field.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Both bounds are exact in f64; `as` is exact within them.
            if f.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
            {
                *value = serde_json::Value::from(f as i64);
            } else if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = serde_json::Value::from(f as u64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(whole_numbers_as_integers)
        }
        _ => {}
    }
}

/// `application/json`, or a `+json` type, with or without parameters.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn too_large(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
        )
    } else {
        ApiError::new(ErrorCode::MalformedRequest, "the body could not be read")
    }
}

/// What a field the request type refused gets as its error, in plain words
/// ([`sotto_proto::plain::refused`]).
fn refused(path: &serde_path_to_error::Path, err: &serde_json::Error) -> ApiError {
    let (code, message) = sotto_proto::plain::refused(&path.to_string(), &err.to_string());
    ApiError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Room {
        title: String,
        kind: sotto_proto::room::RoomKind,
        uses: Option<u32>,
        device_public_key: Option<sotto_proto::keys::DevicePublicKey>,
    }

    fn message(body: &str) -> (ErrorCode, String) {
        let err = parse::<Room>(body.as_bytes()).unwrap_err();
        (err.code, err.message)
    }

    #[test]
    fn plain_messages() {
        let cases = [
            (r#"{"kind":"open"}"#, "field `title` is missing"),
            (
                r#"{"title":"t","kind":"secret"}"#,
                "`kind` must be one of open, social, closed",
            ),
            (r#"{"title":{},"kind":"open"}"#, "`title` must be a string"),
            (
                r#"{"title":"t","kind":"open","uses":-1}"#,
                "`uses` must be a whole number from 0 to 4294967295",
            ),
            (
                r#"{"title":"t","kind":"open","uses":"3"}"#,
                "`uses` must be a whole number from 0 to 4294967295",
            ),
            (
                r#"{"title":"t","kind":"open","x":1}"#,
                "field `x` is not part of this request; this request takes title, kind, uses, device_public_key",
            ),
            (
                r#"{"title":"t","kind":"open","uses":1e10}"#,
                "`uses` must be a whole number from 0 to 4294967295",
            ),
            ("[1]", "the body must be a JSON object"),
            ("{", "the body is not valid JSON: it ends too early"),
            ("{]", "the body is not valid JSON (line 1, column 2)"),
        ];
        for (body, want) in cases {
            assert_eq!(
                message(body),
                (ErrorCode::MalformedRequest, want.to_string()),
                "{body}"
            );
        }
        let (code, text) = message(r#"{"title":"t","kind":"open","device_public_key":"AAAA"}"#);
        assert_eq!(code, ErrorCode::InvalidPublicKey);
        assert_eq!(
            text,
            "`device_public_key` is not a public key: wrong length: 3 bytes"
        );
    }

    /// JSON Schema's integers include `3.0`.
    #[test]
    fn whole_floats_are_integers() {
        let room: Room = parse(br#"{"title":"t","kind":"open","uses":3.0}"#).unwrap();
        assert_eq!(room.uses, Some(3));
        let room: Room = parse(br#"{"title":"t","kind":"open","uses":4e9}"#).unwrap();
        assert_eq!(room.uses, Some(4_000_000_000));
    }

    #[test]
    fn no_serde_wording() {
        for body in [
            r#"{"title":5,"kind":"open"}"#,
            r#"{"title":"t","kind":5}"#,
            r#"{"title":"t","kind":{}}"#,
            r#"{"title":"t","kind":"open","uses":1.5}"#,
        ] {
            let (_, text) = message(body);
            for internal in [
                "invalid type",
                "expected",
                "map",
                "u32",
                "variant",
                "struct",
            ] {
                assert!(!text.contains(internal), "{body}: {text}");
            }
        }
    }
}
