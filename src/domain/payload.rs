//! The payload of a post: a JSON object as the caller wrote it. It is kept
//! and forwarded as text, never as a parsed tree, so that every number,
//! key order, escape and space reaches the publisher byte for byte (a
//! parsed tree would turn `9007199254740993` into a double, or re-sort
//! keys).

use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::{ErrorReason, FieldError};

/// Deepest nesting of arrays and objects accepted in a payload. Receivers
/// written in any language can parse it without hitting a recursion limit.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// A valid JSON object, held as the exact text it arrived as. Cloning is
/// cheap: a bulk request shares one payload among thousands of posts.
/// `None` stands for `{}`, the payload of a caller who sent none.
#[derive(Clone, Default)]
pub struct Payload(Option<Arc<RawValue>>);

impl Payload {
    /// The payload `{}`.
    pub fn empty() -> Self {
        Self(None)
    }

    /// Checks that `text` is one JSON object of at most `max_bytes` bytes
    /// and at most [`MAX_PAYLOAD_DEPTH`] levels deep, and keeps it
    /// unchanged. Empty (or blank) text means `{}`.
    pub fn parse(field: &str, text: &str, max_bytes: usize) -> Result<Self, FieldError> {
        if text.trim().is_empty() {
            return Ok(Self::empty());
        }
        if text.len() > max_bytes {
            return Err(FieldError::new(
                field,
                format!("is {} bytes; the limit is {max_bytes} bytes", text.len()),
            )
            .with_reason(ErrorReason::PayloadTooLarge)
            .with_metadata("limit_bytes", max_bytes.to_string()));
        }
        if !text.trim_start().starts_with('{') {
            return Err(
                FieldError::new(field, "must be a JSON object, e.g. {\"text\":\"Hello\"}")
                    .with_reason(ErrorReason::InvalidPayload),
            );
        }
        let depth = nesting_depth(text);
        if depth > MAX_PAYLOAD_DEPTH {
            return Err(FieldError::new(
                field,
                format!("is nested {depth} levels deep; the limit is {MAX_PAYLOAD_DEPTH}"),
            )
            .with_reason(ErrorReason::InvalidPayload));
        }
        RawValue::from_string(text.to_owned())
            .map(|raw| Self(Some(Arc::from(raw))))
            .map_err(|error| {
                FieldError::new(field, format!("is not valid JSON: {error}"))
                    .with_reason(ErrorReason::InvalidPayload)
            })
    }

    /// A payload read back from storage, which only ever holds payloads
    /// that passed [`Payload::parse`]; `None` if it is not JSON after all.
    pub fn from_stored(text: String) -> Option<Self> {
        if text == "{}" {
            return Some(Self::empty());
        }
        RawValue::from_string(text)
            .ok()
            .map(|raw| Self(Some(Arc::from(raw))))
    }

    /// The JSON text exactly as received.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Some(raw) => raw.get(),
            None => "{}",
        }
    }

    /// Its size in bytes.
    pub fn byte_len(&self) -> usize {
        self.as_str().len()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialises as the JSON object itself (not as a string holding it).
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_map(Some(0))?.end(),
        }
    }
}

/// The deepest nesting of `[` and `{` outside strings.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn keeps_the_exact_text() {
        for text in [
            r#"{"id":1798765432109876543,"big":9007199254740993,"three":3}"#,
            r#"{ "z": 1, "a": -0, "e": 1e308, "f": 0.1 }"#,
            r#"{"emoji":"🎉✨","rtl":"مرحبا بالعالم","escaped":"\u00e9\n"}"#,
            "{\n  \"nested\": {\"a\": [null, {\"b\": null}]}\n}",
        ] {
            let payload = Payload::parse("payload_json", text, LIMIT).unwrap();
            assert_eq!(payload.as_str(), text);
            #[derive(Serialize)]
            struct Body<'a> {
                payload: &'a Payload,
            }
            let body = serde_json::to_string(&Body { payload: &payload }).unwrap();
            assert_eq!(body, format!("{{\"payload\":{text}}}"));
        }
    }

    #[test]
    fn blank_means_an_empty_object() {
        assert_eq!(Payload::parse("p", "  ", LIMIT).unwrap().as_str(), "{}");
        assert_eq!(Payload::default().as_str(), "{}");
    }

    #[test]
    fn refuses_what_is_not_one_json_object() {
        for text in [
            "[1]",
            "\"text\"",
            "12",
            "{\"a\":",
            "{\"a\":1} {}",
            "{'a':1}",
        ] {
            let error = Payload::parse("payload_json", text, LIMIT).unwrap_err();
            assert_eq!(error.field, "payload_json", "{text}");
            assert_eq!(error.reason, ErrorReason::InvalidPayload);
        }
    }

    #[test]
    fn refuses_large_and_deep_payloads() {
        let large = format!("{{\"text\":\"{}\"}}", "x".repeat(LIMIT));
        let error = Payload::parse("payload_json", &large, LIMIT).unwrap_err();
        assert_eq!(error.reason, ErrorReason::PayloadTooLarge);

        let nested =
            |levels: usize| format!("{}{}", "{\"a\":".repeat(levels) + "1", "}".repeat(levels));
        assert!(Payload::parse("p", &nested(MAX_PAYLOAD_DEPTH), LIMIT).is_ok());
        let error = Payload::parse("p", &nested(MAX_PAYLOAD_DEPTH + 1), LIMIT).unwrap_err();
        assert!(error.message.contains("65 levels"), "{error}");
        // Brackets inside strings do not count.
        let in_string = format!("{{\"a\":\"{}\"}}", "[{".repeat(200));
        assert!(Payload::parse("p", &in_string, LIMIT).is_ok());
    }
}
