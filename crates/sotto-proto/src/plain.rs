//! serde's refusals in plain words. serde names Rust types and parser
//! internals ("invalid type: map, expected u32 at line 1 column 9"); people
//! and API clients get "`uses` must be a whole number from 0 to 4294967295"
//! instead. One wording for HTTP bodies and session-channel messages.

use crate::ErrorCode;

/// What a field the request type refused gets as its error. serde's messages
/// have a fixed shape ("missing field `x`", "invalid type: …, expected …");
/// they are rephrased here, and anything else is said without its details.
pub fn refused(field: &str, text: &str) -> (ErrorCode, String) {
    // serde_json adds where in the text it stopped; the field name says more.
    let text = text.rsplit_once(" at line ").map_or(text, |(t, _)| t);
    let named = field != ".";
    let malformed = |message: String| (ErrorCode::MalformedRequest, message);
    if let Some(name) = text.strip_prefix("missing field ") {
        return malformed(format!("field {} is missing", first_quoted(name)));
    }
    if let Some(rest) = text.strip_prefix("unknown field ") {
        let takes = match rest.split_once(", expected ") {
            Some((_, expected)) => format!("; this request takes {}", plain_list(expected)),
            None => "; this request takes no fields".to_string(),
        };
        return malformed(format!(
            "field {} is not part of this request{takes}",
            first_quoted(rest)
        ));
    }
    if let Some(rest) = text.strip_prefix("duplicate field ") {
        return malformed(format!("field {} appears twice", first_quoted(rest)));
    }
    if !named {
        return malformed("the body does not have the expected fields".to_string());
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        let choices = rest
            .split_once(", expected ")
            .map(|(_, expected)| plain_list(expected))
            .unwrap_or_default();
        return malformed(format!("`{field}` must be one of {choices}"));
    }
    let expected = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "))
        .map(|(_, expected)| expected);
    if let Some(expected) = expected {
        return malformed(match plain_type(expected) {
            Some(kind) => format!("`{field}` must be {kind}"),
            None => format!("`{field}` has the wrong type"),
        });
    }
    if field == "device_public_key" {
        // The key's own parser says what is wrong in its words ("not
        // base64url", "wrong length: 31 bytes").
        return (
            ErrorCode::InvalidPublicKey,
            format!("`{field}` is not a public key: {text}"),
        );
    }
    malformed(format!("`{field}` is malformed"))
}

/// serde's name of an expected type, for people.
fn plain_type(expected: &str) -> Option<&'static str> {
    Some(match expected {
        "a string" => "a string",
        "a boolean" => "true or false",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" => "a whole number from 0 to 18446744073709551615",
        "i32" => "a whole number from -2147483648 to 2147483647",
        "i64" => "a whole number from -9223372036854775808 to 9223372036854775807",
        "a sequence" => "an array",
        "a map" => "an object",
        _ if expected.starts_with("struct ") => "an object",
        _ => return None,
    })
}

/// The first `quoted` word of serde's text, kept in backquotes.
fn first_quoted(text: &str) -> String {
    let word = text.split('`').nth(1).unwrap_or("?");
    format!("`{word}`")
}

/// serde's "one of `a`, `b`, `c`" (or "`a`") as "a, b, c".
fn plain_list(expected: &str) -> String {
    expected.trim_start_matches("one of ").replace('`', "")
}
