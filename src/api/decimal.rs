//! Decimals on the wire: accepted as a JSON number or string, always written as a string.
//!
//! Money never passes through a float on its way into agt: a JSON number is parsed from its
//! shortest text form, and `1e400`, `NaN`, `Infinity`, booleans and arrays are refused
//! with a message that says what a valid amount looks like.

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::str::FromStr;

/// Parses a decimal from user text (CLI arguments, query strings, JSON strings).
pub fn parse(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("expected a decimal number such as \"10.5\", got an empty string".into());
    }
    let lower = t.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return Err(format!("expected a finite decimal number, got {t:?}"));
    }
    let parsed = if lower.contains('e') { Decimal::from_scientific(t) } else { Decimal::from_str(t) };
    parsed
        .map(|d| d.normalize())
        .map_err(|_| format!("expected a decimal number such as \"10.5\" with at most 28 significant digits, got {t:?}"))
}

struct DecimalVisitor;

impl<'de> Visitor<'de> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal number, as a JSON number or a string such as \"10.5\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        if !v.is_finite() {
            return Err(E::custom("expected a finite decimal number"));
        }
        // The shortest text that round-trips is what the client wrote (10.1, not 10.0999…).
        parse(&format!("{v}")).map_err(E::custom)
    }
}

/// `#[serde(deserialize_with = "decimal::de")]` for a required decimal.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(DecimalVisitor)
}

/// `#[serde(default, deserialize_with = "decimal::de_opt")]` for an optional decimal.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "de")]
        v: Decimal,
    }

    fn p(json: &str) -> Result<Decimal, String> {
        serde_json::from_str::<T>(json).map(|t| t.v).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_numbers_and_strings_exactly() {
        assert_eq!(p(r#"{"v": 10.1}"#).unwrap().to_string(), "10.1");
        assert_eq!(p(r#"{"v": "1000.50"}"#).unwrap().to_string(), "1000.5");
        assert_eq!(p(r#"{"v": 250}"#).unwrap(), Decimal::from(250));
        assert_eq!(p(r#"{"v": "1e3"}"#).unwrap(), Decimal::from(1000));
    }

    #[test]
    fn refuses_what_is_not_a_finite_decimal() {
        for bad in [
            r#""abc""#,
            r#""NaN""#,
            r#""Infinity""#,
            "true",
            "[1]",
            "{}",
            r#""""#,
            "1e400",
            r#""123456789012345678901234567890""#,
            r#""1e400""#,
        ] {
            assert!(p(&format!(r#"{{"v": {bad}}}"#)).is_err(), "{bad} was accepted");
        }
    }
}
