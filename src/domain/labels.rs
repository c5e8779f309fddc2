//! Labels: small key/value pairs a caller attaches to posts to find them
//! again (`campaign=spring`), with the bounds of Google Cloud's labels so
//! that they stay small in every answer.

use std::collections::BTreeMap;

use super::{ErrorReason, FieldError};

/// Most labels on one post.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// Valid labels, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Checks the rules: at most [`MAX_LABELS`]; keys of 1 to
    /// [`MAX_LABEL_LEN`] bytes of lower-case ASCII letters, digits, `_` and
    /// `-`, starting with a letter; values of at most [`MAX_LABEL_LEN`]
    /// bytes without control characters.
    pub fn parse<'a>(
        field: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FieldError> {
        let invalid = |path: String, message: String| {
            FieldError::new(path, message).with_reason(ErrorReason::InvalidLabels)
        };
        let mut map = BTreeMap::new();
        for (key, value) in labels {
            let path = format!("{field}[{}]", super::echo(key));
            check_key(key).map_err(|message| invalid(path.clone(), message))?;
            if value.len() > MAX_LABEL_LEN {
                return Err(invalid(
                    path,
                    format!(
                        "value is {} bytes; the limit is {MAX_LABEL_LEN}",
                        value.len()
                    ),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(
                    path,
                    "value must not contain control characters".into(),
                ));
            }
            map.insert(key.to_owned(), value.to_owned());
        }
        if map.len() > MAX_LABELS {
            return Err(invalid(
                field.to_owned(),
                format!("at most {MAX_LABELS} labels, got {}", map.len()),
            ));
        }
        Ok(Self(map))
    }

    /// Labels read back from storage, which holds only labels that passed
    /// [`Labels::parse`], as the JSON text of [`Labels::to_json`].
    pub fn from_stored(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok().map(Self)
    }

    /// The stored form: a JSON object with keys in order and no spaces.
    /// [`LabelCondition::stored_fragment`] relies on this exact form.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (index, (key, value)) in self.0.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&json_string(key));
            out.push(':');
            out.push_str(&json_string(value));
        }
        out.push('}');
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of keys and values, to size answers.
    pub fn byte_len(&self) -> usize {
        self.0
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum()
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_LABEL_LEN {
        return Err(format!(
            "key must be 1 to {MAX_LABEL_LEN} bytes, got {}",
            key.len()
        ));
    }
    let mut chars = key.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err("key must start with a lower-case letter".into());
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Err("key may hold only lower-case letters, digits, '_' and '-'".into());
    }
    Ok(())
}

fn json_string(text: &str) -> String {
    // Serialising a string to JSON cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

/// One condition of a label filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelCondition {
    /// `labels.KEY = "VALUE"`
    Equals { key: String, value: String },
    /// `labels.KEY:*`
    Has { key: String },
}

impl LabelCondition {
    /// A piece of text that occurs in the stored JSON of
    /// [`Labels::to_json`] exactly when the condition holds. In that JSON a
    /// real quote never occurs inside a key or value (it is escaped as
    /// `\"`), so `"key":` can only be a key and `"key":"value"` only that
    /// key with exactly that value. Matched as a plain, case-sensitive
    /// substring.
    pub fn stored_fragment(&self) -> String {
        match self {
            Self::Equals { key, value } => format!("{}:{}", json_string(key), json_string(value)),
            Self::Has { key } => format!("{}:", json_string(key)),
        }
    }
}

/// Parses a list filter: conditions joined by `AND`, each
/// `labels.KEY = "VALUE"` or `labels.KEY:*` (a subset of AIP-160).
pub fn parse_label_filter(field: &str, filter: &str) -> Result<Vec<LabelCondition>, FieldError> {
    let invalid =
        |message: String| FieldError::new(field, message).with_reason(ErrorReason::InvalidFilter);
    let mut conditions = Vec::new();
    let mut rest = filter.trim();
    while !rest.is_empty() {
        let after_prefix = rest.strip_prefix("labels.").ok_or_else(|| {
            invalid(format!(
                "expected `labels.KEY = \"VALUE\"` or `labels.KEY:*` at {:?}",
                super::echo(rest)
            ))
        })?;
        let key_len = after_prefix
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after_prefix.len());
        let key = &after_prefix[..key_len];
        check_key(key).map_err(|message| invalid(format!("label {message}")))?;
        let after_key = after_prefix[key_len..].trim_start();
        if let Some(after) = after_key.strip_prefix(":*") {
            conditions.push(LabelCondition::Has {
                key: key.to_owned(),
            });
            rest = after.trim_start();
        } else if let Some(after) = after_key.strip_prefix('=') {
            let (value, after) = parse_quoted(after.trim_start()).ok_or_else(|| {
                invalid(format!("the value of labels.{key} must be a quoted string"))
            })?;
            conditions.push(LabelCondition::Equals {
                key: key.to_owned(),
                value,
            });
            rest = after.trim_start();
        } else {
            return Err(invalid(format!("expected `=` or `:*` after labels.{key}")));
        }
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix("AND")
            .filter(|after| after.starts_with(char::is_whitespace))
            .ok_or_else(|| invalid(format!("expected AND at {:?}", super::echo(rest))))?
            .trim_start();
        if rest.is_empty() {
            return Err(invalid("ends with AND".into()));
        }
    }
    conditions.sort_by_key(LabelCondition::stored_fragment);
    conditions.dedup();
    if conditions.len() > MAX_FILTER_CONDITIONS {
        return Err(invalid(format!(
            "at most {MAX_FILTER_CONDITIONS} conditions, got {}",
            conditions.len()
        )));
    }
    Ok(conditions)
}

/// Most conditions in one label filter (twice the labels a post may hold).
pub const MAX_FILTER_CONDITIONS: usize = 2 * MAX_LABELS;

/// A double-quoted string with `\"` and `\\` escapes, and what follows it.
fn parse_quoted(input: &str) -> Option<(String, &str)> {
    let mut chars = input.strip_prefix('"')?.char_indices();
    let mut value = String::new();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &input[index + 2..])),
            '\\' => match chars.next()?.1 {
                escaped @ ('"' | '\\') => value.push(escaped),
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_labels_and_stores_them_in_key_order() {
        let labels = Labels::parse("labels", [("z", "1"), ("campaign", "spring \"24\"")]).unwrap();
        let json = labels.to_json();
        assert_eq!(json, r#"{"campaign":"spring \"24\"","z":"1"}"#);
        assert_eq!(Labels::from_stored(&json), Some(labels));
    }

    #[test]
    fn refuses_bad_keys_values_and_counts() {
        for (key, value) in [
            ("", "v"),
            ("Upper", "v"),
            ("1st", "v"),
            ("a.b", "v"),
            ("k", "\n"),
        ] {
            let error = Labels::parse("labels", [(key, value)]).unwrap_err();
            assert_eq!(error.reason, ErrorReason::InvalidLabels, "{key}");
            assert!(error.field.starts_with("labels["), "{}", error.field);
        }
        let long = "v".repeat(MAX_LABEL_LEN + 1);
        assert!(Labels::parse("labels", [("k", long.as_str())]).is_err());
        let keys: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}")).collect();
        let error = Labels::parse("labels", keys.iter().map(|k| (k.as_str(), "v"))).unwrap_err();
        assert_eq!(error.field, "labels");
    }

    #[test]
    fn parses_filters() {
        assert_eq!(parse_label_filter("filter", "  ").unwrap(), vec![]);
        assert_eq!(
            parse_label_filter(
                "filter",
                r#"labels.campaign = "spring \"24\"" AND labels.draft:*"#
            )
            .unwrap(),
            vec![
                LabelCondition::Equals {
                    key: "campaign".into(),
                    value: "spring \"24\"".into()
                },
                LabelCondition::Has {
                    key: "draft".into()
                },
            ]
        );
        for bad in [
            "campaign = \"x\"",
            "labels.campaign = x",
            "labels.campaign",
            "labels.a:* AND",
            "labels.a:* OR labels.b:*",
            "labels.Upper:*",
            "labels.a = \"unterminated",
            "labels.a = \"a\\nb\"",
        ] {
            let error = parse_label_filter("filter", bad).unwrap_err();
            assert_eq!(error.reason, ErrorReason::InvalidFilter, "{bad}");
        }
    }

    #[test]
    fn a_filter_is_a_small_set_of_conditions() {
        let repeated = vec!["labels.a:*"; 100].join(" AND ");
        assert_eq!(parse_label_filter("filter", &repeated).unwrap().len(), 1);
        let many: Vec<String> = (0..=MAX_FILTER_CONDITIONS)
            .map(|i| format!("labels.k{i}:*"))
            .collect();
        let error = parse_label_filter("filter", &many.join(" AND ")).unwrap_err();
        assert_eq!(error.reason, ErrorReason::InvalidFilter);
    }

    #[test]
    fn fragments_match_only_the_condition() {
        let stored = Labels::parse(
            "labels",
            [
                ("a_b", "x"),
                ("c", r#""a_b":"y" %"#),
                ("d", ""),
                ("e", "Spring"),
            ],
        )
        .unwrap()
        .to_json();
        let holds = |condition: LabelCondition| stored.contains(&condition.stored_fragment());
        let eq = |key: &str, value: &str| LabelCondition::Equals {
            key: key.into(),
            value: value.into(),
        };
        let has = |key: &str| LabelCondition::Has { key: key.into() };
        assert!(holds(eq("a_b", "x")));
        assert!(!holds(eq("a_b", "y")), "a value that quotes another label");
        assert!(!holds(eq("a", "x")));
        assert!(!holds(eq("b", "x")));
        assert!(holds(eq("c", r#""a_b":"y" %"#)));
        assert!(holds(eq("d", "")));
        assert!(!holds(eq("e", "spring")), "values match case-sensitively");
        assert!(holds(has("a_b")));
        assert!(!holds(has("b")));
        assert!(!holds(has("x")));
    }
}
