//! A yes/no setting as people write it: `true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0`,
//! in any case, as a JSON boolean, the number 1 or 0, or a string. One reading for every
//! boolean a user sets — `agt config set risk.allow_short yes` and
//! `agt risk set allow_short yes --user alice` must not disagree.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// What the words mean; `None` for anything else (a typo must not read as "off").
pub fn parse(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// What the refusal of a value names as allowed.
pub const EXPECTED: &str = "true or false (yes/no, on/off and 1/0 are read as those)";

/// serde: an optional switch (`null` or absent is `None`).
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct SwitchVisitor;
    impl<'de> Visitor<'de> for SwitchVisitor {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            match n {
                0 | 1 => Ok(Some(n == 1)),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(n), &self)),
            }
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            match n {
                0 | 1 => Ok(Some(n == 1)),
                _ => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
            }
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            parse(s).map(Some).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_option(SwitchVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct S {
        #[serde(default, deserialize_with = "de_opt")]
        on: Option<bool>,
    }

    fn read(json: &str) -> Result<Option<bool>, String> {
        serde_json::from_str::<S>(json).map(|s| s.on).map_err(|e| e.to_string())
    }

    #[test]
    fn words_numbers_and_booleans() {
        for (json, want) in [
            (r#"{"on": true}"#, Some(true)),
            (r#"{"on": false}"#, Some(false)),
            (r#"{"on": "True"}"#, Some(true)),
            (r#"{"on": " YES "}"#, Some(true)),
            (r#"{"on": "off"}"#, Some(false)),
            (r#"{"on": "0"}"#, Some(false)),
            (r#"{"on": 1}"#, Some(true)),
            (r#"{"on": null}"#, None),
            (r#"{}"#, None),
        ] {
            assert_eq!(read(json), Ok(want), "{json}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_is_allowed() {
        for json in [r#"{"on": "ture"}"#, r#"{"on": 2}"#, r#"{"on": -1}"#, r#"{"on": ""}"#, r#"{"on": [true]}"#, r#"{"on": 1.0}"#] {
            let e = read(json).expect_err(json);
            assert!(e.contains("true or false"), "{json}: {e}");
        }
    }
}
