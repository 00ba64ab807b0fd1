//! What the API document says about errors and path parameters, for every
//! operation at once.
//!
//! The handlers' `#[utoipa::path]` attributes describe what succeeds; this
//! adds what fails: the error codes each operation can answer, grouped by
//! the HTTP status [`ErrorCode::http_status`] gives them (so a response's
//! schema names exactly the codes it can carry), `Retry-After` on 429 and
//! 503, and the shape of ids, usernames and actions in paths. Codes that
//! follow from the kind of operation are added here once: a body can be
//! malformed, a signed-in route can meet an expired session, a route that
//! reads the database can find it unavailable.

use serde_json::{Map, Value, json};
use sotto_proto::ErrorCode;

use crate::rooms::Action;

/// An id the server made: 32 lowercase hex digits.
const ID_PATTERN: &str = "^[0-9a-f]{32}$";
/// `sotto_proto::ids::is_valid_username`.
const USERNAME_PATTERN: &str = "^[a-z0-9_]{3,20}$";

/// The operations clients are rate-limited on, per address.
const RATE_LIMITED: &[&str] = &["register", "challenge", "login"];

/// The codes an operation answers beyond those that follow from its kind.
/// `None` for an operation this table does not know: the unit test below
/// makes every new route say what it can fail with.
fn specific_errors(operation_id: &str) -> Option<&'static [ErrorCode]> {
    use ErrorCode::*;
    Some(match operation_id {
        "register" => &[
            InvalidUsername,
            InvalidProfile,
            InvalidParameter,
            InvalidPublicKey,
            InvalidDeviceLink,
            BadSignature,
            InviteNotFound,
            InviteExpired,
            InviteUsedUp,
            UsernameTaken,
            DeviceKeyTaken,
        ],
        "challenge" => &[InvalidPublicKey],
        "login" => &[ChallengeInvalid, BadSignature],
        "logout" | "me" | "export" | "devices" | "hallway" => &[],
        "update_me" => &[InvalidProfile],
        "delete_me" => &[BadSignature],
        "add_device" => &[
            InvalidPublicKey,
            InvalidParameter,
            BadSignature,
            InvalidDeviceLink,
            DeviceKeyTaken,
            DeviceChainConflict,
        ],
        "revoke_device" => &[
            DeviceNotFound,
            InvalidDeviceLink,
            LastDevice,
            DeviceChainConflict,
        ],
        "create_invite" => &[AdminOnly, InvalidParameter],
        "profile" | "unfollow" | "followers" | "following" => &[UserNotFound],
        "follow" => &[UserNotFound, CannotFollowSelf, InvalidAccessStatement],
        "create" => &[InvalidRoom],
        "get" => &[RoomNotFound, RoomAccessDenied],
        "audience" => &[MalformedRequest, RoomNotFound, RoomAccessDenied],
        "join" => &[RoomNotFound, RoomEnded, BannedFromRoom, RoomAccessDenied],
        "grant_access" => &[
            UserNotFound,
            InvalidAccessStatement,
            RoomNotFound,
            RoomEnded,
            NotInRoom,
            NotPermitted,
        ],
        "self_action" => &[
            NotFound,
            RoomNotFound,
            RoomEnded,
            NotInRoom,
            NotPermitted,
            AlreadyOnStage,
            NoStageInvitation,
        ],
        "member_action" => &[
            NotFound,
            InvalidAccessStatement,
            RoomNotFound,
            RoomEnded,
            NotInRoom,
            TargetNotInRoom,
            NotPermitted,
            TargetOutranksYou,
            NotOnStage,
            AlreadyOnStage,
            OnlySelf,
        ],
        // Without the WebSocket upgrade headers.
        "upgrade" => &[MalformedRequest],
        "healthz" | "metrics" => &[],
        _ => return None,
    })
}

/// Adds the error responses and path parameter shapes to `doc` (the
/// document utoipa generated from the routes).
pub fn complete(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            if let Some(operation) = operation.as_object_mut() {
                complete_operation(operation);
            }
        }
    }
}

/// `doc` as pretty JSON with its sections in the usual order (`openapi`,
/// `info`, `paths`, `components`, then any other); within them, keys are
/// sorted.
pub fn to_pretty_json(doc: &Value) -> String {
    #[derive(serde::Serialize)]
    struct Ordered<'a> {
        openapi: &'a Value,
        info: &'a Value,
        paths: &'a Value,
        components: &'a Value,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }
    let Some(sections) = doc.as_object() else {
        return doc.to_string();
    };
    let section = |name: &str| sections.get(name).unwrap_or(&Value::Null);
    let rest = sections
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "openapi" | "info" | "paths" | "components"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ordered = Ordered {
        openapi: section("openapi"),
        info: section("info"),
        paths: section("paths"),
        components: section("components"),
        rest,
    };
    serde_json::to_string_pretty(&ordered).unwrap_or_default()
}

fn complete_operation(op: &mut Map<String, Value>) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut codes: Vec<ErrorCode> = specific_errors(&id).unwrap_or_default().to_vec();
    if op.contains_key("requestBody") {
        codes.extend([
            ErrorCode::MalformedRequest,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
        ]);
    }
    if op.contains_key("security") {
        codes.extend([
            ErrorCode::Unauthenticated,
            ErrorCode::SessionExpired,
            ErrorCode::SessionRevoked,
        ]);
    }
    if RATE_LIMITED.contains(&id.as_str()) {
        codes.push(ErrorCode::RateLimited);
    }
    if id != "metrics" {
        codes.extend([ErrorCode::DatabaseUnavailable, ErrorCode::Unavailable]);
    }
    let params = op.get_mut("parameters").and_then(Value::as_array_mut);
    let mut has_path_params = false;
    for param in params.into_iter().flatten() {
        if param["in"] == "path" {
            has_path_params = true;
            describe_path_param(&id, param);
        }
    }
    if has_path_params {
        // A path that does not decode as UTF-8.
        codes.push(ErrorCode::NotFound);
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    responses.remove("4XX");
    let mut statuses: Vec<u16> = codes.iter().map(|c| c.http_status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let mut here: Vec<&str> = codes
            .iter()
            .filter(|c| c.http_status() == status)
            .map(|c| c.as_str())
            .collect();
        here.sort_unstable();
        here.dedup();
        responses.insert(status.to_string(), error_response(status, &here));
    }
}

/// An error response whose `code` is one of `codes`.
fn error_response(status: u16, codes: &[&str]) -> Value {
    let listed = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let schema = json!({
        "allOf": [
            { "$ref": "#/components/schemas/ErrorResponse" },
            {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": { "code": { "type": "string", "enum": codes } }
                    }
                }
            }
        ]
    });
    let mut response = json!({
        "description": format!("An error: {listed}."),
        "content": { "application/json": { "schema": schema } }
    });
    if status == 429 || status == 503 {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": true,
                "schema": { "type": "integer", "minimum": 1 }
            }
        });
    }
    response
}

fn describe_path_param(operation_id: &str, param: &mut Value) {
    let name = param["name"].as_str().unwrap_or_default();
    let (schema, description) = match name {
        "room_id" | "user_id" | "device_id" => (
            json!({ "type": "string", "pattern": ID_PATTERN }),
            "32 lowercase hex digits, as the server made it.".to_string(),
        ),
        "username" => (
            json!({ "type": "string", "pattern": USERNAME_PATTERN }),
            "3–20 characters of a-z, 0-9 and _.".to_string(),
        ),
        "action" => {
            let on_member = operation_id == "member_action";
            let routes: Vec<&str> = Action::ALL
                .into_iter()
                .filter(|a| a.takes_target() == on_member)
                .map(Action::route)
                .collect();
            let description = routes.join(" | ");
            (json!({ "type": "string", "enum": routes }), description)
        }
        _ => return,
    };
    param["schema"] = schema;
    param["description"] = Value::String(description);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented operation says what it can fail with, and every
    /// one of its responses but 101 and 2xx is an error body.
    #[test]
    fn every_operation_lists_its_errors() {
        let doc: Value = serde_json::from_str(&super::super::openapi_json()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(
                    specific_errors(id).is_some(),
                    "{method} {path}: add `{id}` to specific_errors"
                );
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.contains_key("4XX"), "{method} {path}");
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let codes = &response["content"]["application/json"]["schema"]["allOf"][1]
                            ["properties"]["error"]["properties"]["code"]["enum"];
                        assert!(codes.as_array().is_some_and(|c| !c.is_empty()), "{status}");
                    }
                }
            }
        }
    }
}
