//! Decimals on the wire: accepted as a JSON number or string, always written as a string.
//!
//! Money never passes through a float on its way into agt: a request body's numbers that a
//! float could change are quoted before serde reads them ([`exact_numbers`]) and parsed
//! digit for digit; a text with more digits than a decimal holds is refused, not rounded
//! ([`parse`]); `1e400`, `NaN`, `Infinity`, booleans and arrays are refused with a message
//! that says what a valid amount looks like. Arithmetic on money that must not round
//! goes through [`exact_add`] and [`exact_mul`].

use super::quote::quoted;
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::str::FromStr;

/// Why [`parse`] refused a text, one variant per reason, each carrying the text as sent
/// (trimmed). Its `Display` is the message users see; a caller that answers some reasons
/// in its own words (the TUI's forms say "not a number" of text that is none) asks the
/// variant ([`BadDecimal::is_not_a_number`]), never the message's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDecimal {
    /// Nothing but blanks.
    #[error("expected a decimal number such as \"10.5\", got an empty string")]
    Empty,
    /// `NaN`, `inf`, `Infinity`: words a float parser takes, never an amount.
    #[error("expected a finite decimal number, got {}", quoted(.0))]
    NotFinite(String),
    /// A thousands separator (`1_000`, `1,000`): rust_decimal would skip `_`.
    #[error("{}", other_characters(.0))]
    Separator(String),
    /// Characters no decimal has (`ten`, `1 000`).
    #[error("{}", other_characters(.0))]
    Characters(String),
    /// `+5`: a JSON number has no plus sign, so its text has none either.
    #[error("write a decimal without a plus sign: {}, not {}", quoted(unsigned(.0)), quoted(.0))]
    PlusSign(String),
    /// `5.`, `.5`: a point without a digit on each side.
    #[error("a decimal point needs a digit on each side (\"0.5\", \"5\" or \"5.0\"), got {}", quoted(.0))]
    BarePoint(String),
    /// The right characters in no decimal's order (`-`, `1-2`, `1e`).
    #[error("expected a decimal number such as \"10.5\" or \"-2\", got {}", quoted(.0))]
    Shape(String),
    /// A size or a number of places a decimal cannot hold (`1e400`, 30 nines).
    #[error("{} is beyond what agt keeps exactly: at most 28 digits after the point, and under 7.9e28 in size", quoted(.0))]
    OutOfRange(String),
    /// More significant digits than a decimal keeps: rust_decimal would round them.
    #[error("{} has more digits than agt keeps exactly (28 significant digits, at most 28 after the point)", quoted(.0))]
    TooManyDigits(String),
}

impl BadDecimal {
    /// Whether the text is no number at all (`ten`, `-`, `nan`, blank), as opposed to a
    /// number agt cannot take as written (too large, too long, `5.`, `+5`, `1_000`),
    /// whose message says what to change.
    pub fn is_not_a_number(&self) -> bool {
        matches!(self, BadDecimal::Empty | BadDecimal::NotFinite(_) | BadDecimal::Characters(_) | BadDecimal::Shape(_))
    }
}

/// The message of [`BadDecimal::Separator`] and [`BadDecimal::Characters`].
fn other_characters(t: &str) -> String {
    format!(
        "expected a decimal number such as \"10.5\": digits, a point, a sign and an exponent only, without separators; got {}",
        quoted(t)
    )
}

/// `t` without its leading `+`.
fn unsigned(t: &str) -> &str {
    t.strip_prefix('+').unwrap_or(t)
}

/// Parses a decimal from user text (CLI arguments, query strings, JSON strings, CSV
/// cells): one every reader of amounts shares, so that `"+5"` or `"5."` is refused
/// everywhere alike ([`misshapen`]).
pub fn parse(text: &str) -> Result<Decimal, BadDecimal> {
    let t = text.trim();
    if t.is_empty() {
        return Err(BadDecimal::Empty);
    }
    let lower = t.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return Err(BadDecimal::NotFinite(t.into()));
    }
    // rust_decimal skips `_` (`"1_000"` is 1000): a separator is refused, as `,` is.
    if !t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')) {
        return Err(if t.contains(['_', ',']) { BadDecimal::Separator(t.into()) } else { BadDecimal::Characters(t.into()) });
    }
    if let Some(shape) = misshapen(t) {
        return Err(shape);
    }
    let parsed = if lower.contains('e') { Decimal::from_scientific(t) } else { Decimal::from_str(t) };
    let d = parsed.map(|d| d.normalize()).map_err(|_| BadDecimal::OutOfRange(t.into()))?;
    if !same_digits(t, DecimalText::of(d).as_str()) {
        return Err(BadDecimal::TooManyDigits(t.into()));
    }
    Ok(d)
}

/// What is wrong with the shape of a decimal's text, if anything. Text must be written as
/// a JSON number must (`+5`, `5.` and `.5` are refused either way), except that leading
/// zeros are allowed (`007.50`): an optional `-`, digits, a point with digits on both
/// sides, an exponent. rust_decimal takes `+5` and `5.`: the same amount was refused as a
/// JSON number and taken as a string, and a stray sign or point in an argument or a CSV
/// row slipped through. A text of the right shape costs a scan and no allocation: a
/// placement's price and quantity come here.
fn misshapen(t: &str) -> Option<BadDecimal> {
    let b = t.as_bytes();
    if b.first() == Some(&b'+') {
        return Some(BadDecimal::PlusSign(t.into()));
    }
    let unsigned = b.strip_prefix(b"-").unwrap_or(b);
    let split = unsigned.iter().position(|c| matches!(c, b'e' | b'E')).unwrap_or(unsigned.len());
    let (mantissa, exponent) = unsigned.split_at(split);
    let (whole, fraction) = match mantissa.iter().position(|&c| c == b'.') {
        Some(p) => (&mantissa[..p], Some(&mantissa[p + 1..])),
        None => (mantissa, None),
    };
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if fraction.is_some_and(|f| whole.is_empty() || f.is_empty()) {
        return Some(BadDecimal::BarePoint(t.into()));
    }
    let exponent_ok = match exponent.split_first() {
        None => true,
        Some((_, e)) => digits(e.strip_prefix(b"+").or_else(|| e.strip_prefix(b"-")).unwrap_or(e)),
    };
    if !digits(whole) || !fraction.is_none_or(digits) || !exponent_ok {
        return Some(BadDecimal::Shape(t.into()));
    }
    None
}

/// Whether two decimal texts have the same significant digits: the digits without the
/// sign, the point, the exponent, and leading or trailing zeros (`"-001.2300e5"` has
/// `123`). rust_decimal rounds a text with more digits than its 96-bit mantissa holds;
/// a rounded value has other digits than the text it came from, an exact one the same.
/// Compared digit by digit, without allocating: this runs twice per placement.
fn same_digits(a: &str, b: &str) -> bool {
    fn digits(t: &str) -> impl Iterator<Item = u8> + '_ {
        let mantissa = t.split(['e', 'E']).next().unwrap_or("");
        mantissa.bytes().filter(u8::is_ascii_digit).skip_while(|&c| c == b'0')
    }
    let (mut x, mut y) = (digits(a), digits(b));
    loop {
        match (x.next(), y.next()) {
            (Some(p), Some(q)) if p == q => {}
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            (Some(p), None) => return p == b'0' && x.all(|c| c == b'0'),
            (None, Some(q)) => return q == b'0' && y.all(|c| c == b'0'),
        }
    }
}

/// `a + b` if the sum is exact, else `None`. rust_decimal rounds a sum whose digits do not
/// fit its 96-bit mantissa (`10^27 + 0.3` is `10^27`): money must never move that way.
/// Summed here in 128 bits at the finer of the two scales, and kept only if it fits.
pub fn exact_add(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let scale = a.scale().max(b.scale());
    let at = |d: Decimal| d.mantissa().checked_mul(10i128.checked_pow(scale - d.scale())?);
    Decimal::try_from_i128_with_scale(at(a)?.checked_add(at(b)?)?, scale).ok()
}

/// An average price `from` moved towards `to` by `share` (0 to 1) of the difference: the
/// running mean of a volume-weighted average whose total cost no longer fits in a decimal
/// (a position's, an order's fills'), where cost / quantity would overflow. Nothing in it
/// can (`share` ≤ 1); `to` if the difference itself cannot be held.
pub fn moved_toward(from: Decimal, to: Decimal, share: Decimal) -> Decimal {
    to.checked_sub(from).and_then(|d| d.checked_mul(share)).and_then(|m| from.checked_add(m)).unwrap_or(to)
}

/// `a × b` if the product is exact, else `None` (see [`exact_add`]).
pub fn exact_mul(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let (mut m, mut scale) = (a.mantissa().checked_mul(b.mantissa())?, a.scale() + b.scale());
    while scale > 0 && m % 10 == 0 {
        m /= 10;
        scale -= 1;
    }
    Decimal::try_from_i128_with_scale(m, scale).ok()
}

/// A JSON text with every number a float could change written as a string: every number
/// with a point or an exponent, and integers of more than 18 digits. serde_json reads the
/// other integers exactly (an `i64` holds any 18 digits), and hands the rest to the
/// decimal visitor as an `f64`, rounded (`0.30000000000000001` as `0.3`) or even a unit
/// off (its fast parser misreads some short numbers with large exponents, `6e25`); as
/// strings they are parsed digit for digit, or refused. No field of the API that takes a
/// fraction is anything but a decimal. Borrowed when no number needs it, as in requests
/// that send decimals as strings. A text field would now take such a number as its text
/// (`{"username": 1.5}`): [`numbers_as_one`] is the text to check the types against.
pub fn exact_numbers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    splice_numbers(json, |buf, number| {
        buf.push(b'"');
        buf.extend_from_slice(number);
        buf.push(b'"');
    })
}

/// The JSON text with every number [`exact_numbers`] would quote written as `1`: a text
/// that has each of them where it was, as a JSON number still, but one every decimal
/// field takes. Reading a request's type from it refuses a number sent for a text field
/// as `{"username": 15}` is refused, where the quoted text would pass it as `"1.5"`.
/// Borrowed when no number needs it.
pub fn numbers_as_one(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    splice_numbers(json, |buf, _| buf.push(b'1'))
}

/// `json` with each number a float could change (see [`exact_numbers`]) written by `write`.
fn splice_numbers<'a>(json: &'a [u8], write: impl Fn(&mut Vec<u8>, &[u8])) -> std::borrow::Cow<'a, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let (mut digits, mut fraction) = (0usize, false);
                let mut leading = true;
                while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    match json[i] {
                        b'.' => fraction = true,
                        b'e' | b'E' => {
                            fraction = true;
                            // The exponent's digits are not the number's.
                            while i + 1 < json.len() && matches!(json[i + 1], b'-' | b'+' | b'0'..=b'9') {
                                i += 1;
                            }
                        }
                        b'0' if leading => {}
                        b'0'..=b'9' => {
                            leading = false;
                            digits += 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                // Only a number JSON allows: `00.5`, `1.` or `1.e1` are left for the parser
                // to refuse, where a string of them would be read as a decimal.
                if (fraction || digits > 18) && is_json_number(&json[start..i]) {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(json.len() + 8));
                    buf.extend_from_slice(&json[copied..start]);
                    write(buf, &json[start..i]);
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(json),
        Some(mut buf) => {
            buf.extend_from_slice(&json[copied..]);
            std::borrow::Cow::Owned(buf)
        }
    }
}

/// The one key of the object that stands, in a body read by [`numbers_kept`], for a JSON
/// number as its client wrote it: `{"$number": "1e2"}` for `1e2`. A settings body
/// (`PUT /api/config`, `PUT /api/risk/limits`) is read into a `serde_json::Value`, where
/// [`exact_numbers`] leaves `100.0` the string `"100.0"`: a whole-number setting then
/// refused what `100` passed, and every message quoted the number as if it had been sent
/// as text. Kept as this object, the settings read it as a number, exactly, and show it
/// as it came.
pub const SENT_NUMBER: &str = "$number";

/// The text of a number [`numbers_kept`] kept (`{"$number": "1e2"}` → `1e2`).
pub fn sent_number(value: &serde_json::Value) -> Option<&str> {
    match value {
        serde_json::Value::Object(m) if m.len() == 1 => m.get(SENT_NUMBER)?.as_str(),
        _ => None,
    }
}

/// A JSON body read as a `serde_json::Value` with each number a float could change kept
/// as the text it was sent as ([`SENT_NUMBER`]); other numbers (integers of up to 18
/// digits) are JSON numbers as usual. `exact` is the body as [`exact_numbers`] read it:
/// those numbers are strings there and JSON numbers in `probe`, the body as
/// [`numbers_as_one`] read it, which tells them from strings sent as strings. An object
/// of the body's own with the key `$number` is refused (the field it is in named), so
/// only a number can arrive as one.
pub fn numbers_kept(exact: &mut serde_json::Value, probe: Option<&serde_json::Value>) -> Result<(), String> {
    use serde_json::Value;
    fn walk(v: &mut Value, probe: Option<&Value>, at: &str) -> Result<(), String> {
        match v {
            Value::String(text) if probe.is_some_and(Value::is_number) => {
                let text = std::mem::take(text);
                *v = Value::Object(serde_json::Map::from_iter([(SENT_NUMBER.to_string(), Value::String(text))]));
            }
            Value::Object(m) => {
                if m.contains_key(SENT_NUMBER) {
                    let field = if at.is_empty() { String::new() } else { format!("{at}: ") };
                    return Err(format!("{field}unknown field {SENT_NUMBER:?}"));
                }
                for (k, item) in m.iter_mut() {
                    let at = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                    walk(item, probe.and_then(|p| p.get(k)), &at)?;
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, probe.and_then(|p| p.get(i)), &format!("{at}[{i}]"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(exact, probe, "")
}

/// JSON's number grammar (RFC 8259 §6): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(t: &[u8]) -> bool {
    fn digits(t: &[u8]) -> usize {
        t.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let mut i = usize::from(t.first() == Some(&b'-'));
    match (t.get(i), digits(&t[i..])) {
        (Some(b'0'), 1) => i += 1,
        (Some(b'1'..=b'9'), n) => i += n,
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        let n = digits(&t[i + 1..]);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&t[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == t.len()
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
        // Request bodies never get here with a fraction ([`exact_numbers`] quotes them);
        // other JSON read into a decimal does. The shortest text that round-trips is
        // what was written for up to 15 digits (10.1, not 10.0999…).
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

/// A decimal's text, written on the stack: exactly what its `Display` (and its serde
/// form) writes — the sign, the digits, and as many fraction digits as its scale, trailing
/// zeros included (normalize first where they must go).
///
/// rust_decimal finds each digit by dividing its 96-bit mantissa by 10 (three words per
/// division) and pushes characters one at a time: ~240 instructions per decimal, and an
/// order's path writes ~45 of them (store rows, events, the journal, the answer), ~10 %
/// of the trading lane. Prices and quantities fit a `u64` mantissa, which `itoa` writes
/// two digits at a time; a larger one takes rust_decimal's path.
#[derive(Clone, Copy)]
pub struct DecimalText {
    buf: [u8; DecimalText::MAX],
    len: u8,
}

impl DecimalText {
    /// Longer than any decimal's text: 29 digits, a sign and a point are 31 (28 fraction
    /// digits need a "0." before them: "-0.000…1" is 31 too).
    const MAX: usize = 40;

    pub fn of(d: Decimal) -> DecimalText {
        let mut t = DecimalText { buf: [0; Self::MAX], len: 0 };
        let m = d.mantissa().unsigned_abs();
        let Ok(m) = u64::try_from(m) else {
            use std::fmt::Write;
            write!(t, "{d}").expect("a decimal's text fits in DecimalText::MAX bytes");
            return t;
        };
        // The mantissa's digits (itoa: two at a time from a table), then zeros in front
        // of them up to the scale's count (0.05 is "5" at scale 2: "05").
        let mut itoa = itoa::Buffer::new();
        let digits = itoa.format(m).as_bytes();
        let digits = if m == 0 { &digits[..0] } else { digits };
        let scale = d.scale() as usize;
        const ZEROS: &[u8; 28] = b"0000000000000000000000000000";
        let pad = &ZEROS[..scale.saturating_sub(digits.len())];
        let whole = (pad.len() + digits.len()) - scale;
        let mut n = 0;
        let mut push = |bytes: &[u8]| {
            t.buf[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        if d.is_sign_negative() {
            push(b"-");
        }
        if whole == 0 {
            push(b"0");
            if scale > 0 {
                push(b".");
                push(pad);
                push(digits);
            }
        } else {
            // No padding here: there are more digits than the scale.
            push(&digits[..whole]);
            if scale > 0 {
                push(b".");
                push(&digits[whole..]);
            }
        }
        t.len = n as u8;
        t
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).expect("written from ASCII digits or a str")
    }
}

impl fmt::Write for DecimalText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len as usize + s.len();
        if end > Self::MAX {
            return Err(fmt::Error);
        }
        self.buf[self.len as usize..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl rusqlite::ToSql for DecimalText {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(self.as_str().as_bytes())))
    }
}

/// `#[serde(serialize_with = "decimal::ser")]`: the text rust_decimal's serde writes, by
/// [`DecimalText`]. For the decimals of the order path's events, journal records and
/// answers; elsewhere the derived form is the same text, only slower.
pub fn ser<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(DecimalText::of(*d).as_str())
}

/// [`ser`] for an optional decimal: `null` when absent.
pub fn ser_opt<S: serde::Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser(d, s),
        None => s.serialize_none(),
    }
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
    fn sums_and_products_are_exact_or_refused() {
        let d = |t: &str| parse(t).unwrap();
        assert_eq!(exact_add(d("100"), d("0.0000000000000000000000000001")), None);
        assert_eq!(exact_add(d("9234567890123456789012345678"), d("0.3")), None);
        assert_eq!(exact_add(d("1234567890123456789012345678"), d("0.3")), Some(d("1234567890123456789012345678.3")));
        assert_eq!(exact_add(d("79228162514264337593543950335"), d("1")), None);
        assert_eq!(exact_add(d("1.50"), d("-0.5")), Some(d("1")));
        assert_eq!(exact_add(d("10000000000000000000000000"), d("0.001")), Some(d("10000000000000000000000000.001")));
        assert_eq!(exact_mul(d("190.01"), d("0.0001")), Some(d("0.019001")));
        assert_eq!(exact_mul(d("0.00000000000001"), d("0.000000000000001")), None);
        assert_eq!(exact_mul(d("100000000000000"), d("1000000000000000")), None);
        assert_eq!(exact_mul(d("10000000000000"), d("1000000000000000")), Some(d("10000000000000000000000000000")));
        assert_eq!(exact_mul(d("79228162514264337593543950335"), d("2")), None);
    }

    /// As a request body is read: long numbers quoted first ([`exact_numbers`]).
    fn wire(json: &str) -> Result<Decimal, String> {
        serde_json::from_slice::<T>(&exact_numbers(json.as_bytes())).map(|t| t.v).map_err(|e| e.to_string())
    }

    #[test]
    fn json_numbers_a_float_would_round_are_read_digit_for_digit() {
        assert_eq!(wire(r#"{"v": 12345678901234567.89}"#).unwrap().to_string(), "12345678901234567.89");
        assert_eq!(wire(r#"{"v": 0.30000000000000001}"#).unwrap().to_string(), "0.30000000000000001");
        assert_eq!(wire(r#"{"v": 1.0000000000000001}"#).unwrap().to_string(), "1.0000000000000001");
        assert_eq!(wire(r#"{"v": 123456789012345678901234}"#).unwrap().to_string(), "123456789012345678901234");
        assert_eq!(wire(r#"{"v": -190.004999999999999999}"#).unwrap().to_string(), "-190.004999999999999999");
        // What a float holds exactly is read as before.
        assert_eq!(wire(r#"{"v": 10.1}"#).unwrap().to_string(), "10.1");
        assert_eq!(wire(r#"{"v": 1.5e3}"#).unwrap().to_string(), "1500");
        assert!(wire(r#"{"v": 1e400}"#).is_err());
        // Short numbers serde_json's float parser misreads (a unit off in the last place).
        assert_eq!(wire(r#"{"v": 6e25}"#).unwrap().to_string(), "60000000000000000000000000");
        assert_eq!(wire(r#"{"v": 0.00000000093850020116375}"#).unwrap().to_string(), "0.00000000093850020116375");
        assert_eq!(wire(r#"{"v": 0.0000000000000000000000000001}"#).unwrap().to_string(), "0.0000000000000000000000000001");
        assert!(wire(r#"{"v": 1.00000000000000000000000000001}"#).is_err());
    }

    #[test]
    fn only_numbers_outside_strings_are_quoted() {
        let body = br#"{"a":"x\"12345678901234567890.5","v":[1.23456789012345678,2],"n":-0.5e-3}"#;
        assert_eq!(
            std::str::from_utf8(&exact_numbers(body)).unwrap(),
            r#"{"a":"x\"12345678901234567890.5","v":["1.23456789012345678",2],"n":"-0.5e-3"}"#
        );
        assert!(matches!(exact_numbers(br#"{"v": 10, "s": "1234567890123456789012.5"}"#), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn the_type_probe_has_a_number_where_each_quoted_one_was() {
        let body = br#"{"a":"1.5","v":[1.23456789012345678,2],"n":-0.5e-3,"i":12345678901234567890123}"#;
        assert_eq!(std::str::from_utf8(&numbers_as_one(body)).unwrap(), r#"{"a":"1.5","v":[1,2],"n":1,"i":1}"#);
        assert!(matches!(numbers_as_one(br#"{"v": 10, "s": "2.5"}"#), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn a_settings_body_keeps_each_quoted_number_as_sent_and_its_strings_as_strings() {
        let body = br#"{"a":"1.5","v":[1.5,2],"n":{"m":1e2},"i":7}"#;
        let mut exact: serde_json::Value = serde_json::from_slice(&exact_numbers(body)).unwrap();
        let probe: serde_json::Value = serde_json::from_slice(&numbers_as_one(body)).unwrap();
        numbers_kept(&mut exact, Some(&probe)).unwrap();
        let kept = |t: &str| serde_json::json!({ SENT_NUMBER: t });
        assert_eq!(exact, serde_json::json!({"a": "1.5", "v": [kept("1.5"), 2], "n": {"m": kept("1e2")}, "i": 7}));
        assert_eq!(sent_number(&exact["n"]["m"]), Some("1e2"));
        assert_eq!(sent_number(&exact["a"]), None);
        // Only a number arrives as one: the body's own `$number` is refused, named.
        let mut forged = serde_json::json!({"risk": {"max_open_orders": {"$number": "5"}}});
        assert_eq!(numbers_kept(&mut forged, None).unwrap_err(), r#"risk.max_open_orders: unknown field "$number""#);
    }

    #[test]
    fn a_text_with_more_digits_than_a_decimal_holds_is_refused_not_rounded() {
        for bad in [
            "190.00000000000000000000000000001",
            "1.00000000000000000000000000001",
            "0.00000000000000000000000000001",
            "9.9999999999999999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted as {:?}", parse(bad));
        }
        for good in [
            "0.0000000000000000000000000001",
            "1234567890123456789012345678",
            "0.1000000000000000000000000000",
            "-00012.3400",
            "1.5e-20",
            "7922816251426433759354395033.5",
        ] {
            let d = parse(good);
            assert!(d.is_ok(), "{good}: {d:?}");
        }
        assert_eq!(parse("-00012.3400").unwrap().to_string(), "-12.34");
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
            r#""1_000""#,
            r#""5_""#,
            r#""1,000""#,
            r#""1 000""#,
        ] {
            assert!(p(&format!(r#"{{"v": {bad}}}"#)).is_err(), "{bad} was accepted");
        }
    }

    /// A string is held to a JSON number's shape: what `{"v": 5.}` refuses, `{"v": "5."}`
    /// refuses too, and says what to write.
    #[test]
    fn a_sign_or_a_bare_point_is_refused_in_text_as_in_a_json_number() {
        for (bad, says) in [
            ("+5", "without a plus sign: \"5\""),
            (" +0.5 ", "without a plus sign"),
            ("+", "without a plus sign"),
            ("5.", "a digit on each side"),
            (".5", "a digit on each side"),
            ("-.5", "a digit on each side"),
            ("5.e3", "a digit on each side"),
            (".", "a digit on each side"),
            ("1.5.5", "such as \"10.5\""),
            ("1-2", "such as \"10.5\""),
            ("--1", "such as \"10.5\""),
            ("-", "such as \"10.5\""),
            ("1e", "such as \"10.5\""),
            ("1e+", "such as \"10.5\""),
            ("1e5e5", "such as \"10.5\""),
            ("e5", "such as \"10.5\""),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(p(&format!(r#"{{"v": "{bad}"}}"#)).is_err(), "{bad} was accepted as a JSON string");
        }
        for (good, is) in [("5", "5"), ("-5", "-5"), ("0.5", "0.5"), ("007.50", "7.5"), ("1e+3", "1000"), ("1E-3", "0.001"), ("5.0", "5")] {
            assert_eq!(parse(good).map(|d| d.to_string()), Ok(is.to_string()), "{good}");
        }
    }

    /// Each refusal names its reason as a variant, so that a caller can tell text that is
    /// no number from a number agt cannot take without reading the message.
    #[test]
    fn a_refusal_says_its_reason_as_a_variant() {
        for (bad, reason) in [
            ("  ", BadDecimal::Empty),
            ("NaN", BadDecimal::NotFinite("NaN".into())),
            ("-inf", BadDecimal::NotFinite("-inf".into())),
            ("ten", BadDecimal::Characters("ten".into())),
            ("1 000", BadDecimal::Characters("1 000".into())),
            ("1_000", BadDecimal::Separator("1_000".into())),
            ("1,5", BadDecimal::Separator("1,5".into())),
            (" +5 ", BadDecimal::PlusSign("+5".into())),
            ("5.", BadDecimal::BarePoint("5.".into())),
            ("-", BadDecimal::Shape("-".into())),
            ("1e400", BadDecimal::OutOfRange("1e400".into())),
            ("1.00000000000000000000000000001", BadDecimal::TooManyDigits("1.00000000000000000000000000001".into())),
        ] {
            assert_eq!(parse(bad), Err(reason), "{bad:?}");
        }
        let no_number = ["", "ten", "-", "nan", "1.2.3", "1 000"];
        let not_taken = ["1_000", "1,000", "+5", "5.", "1e400", "999999999999999999999999999999", "1.00000000000000000000000000001"];
        for text in no_number {
            assert!(parse(text).unwrap_err().is_not_a_number(), "{text:?}");
        }
        for text in not_taken {
            assert!(!parse(text).unwrap_err().is_not_a_number(), "{text:?}");
        }
        // The message is the reason's, as users saw it before there were variants.
        assert_eq!(parse("").unwrap_err().to_string(), "expected a decimal number such as \"10.5\", got an empty string");
        assert_eq!(parse("+5").unwrap_err().to_string(), "write a decimal without a plus sign: \"5\", not \"+5\"");
        assert_eq!(
            parse("1_000").unwrap_err().to_string(),
            "expected a decimal number such as \"10.5\": digits, a point, a sign and an exponent only, without separators; got \"1_000\""
        );
    }

    #[test]
    fn a_number_json_does_not_allow_is_refused_not_quoted() {
        for bad in ["00.5", "1.", "1.e1", "-.5", "01.5", "1e", "1e+", "--1", "1.5.5", "1-2"] {
            assert!(wire(&format!(r#"{{"v": {bad}}}"#)).is_err(), "{bad} was accepted");
        }
        for good in ["0.5", "-0.5", "10.25", "1e3", "1E-3", "0e0", "-0.0", "12345678901234567890"] {
            assert!(wire(&format!(r#"{{"v": {good}}}"#)).is_ok(), "{good} was refused");
        }
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;
    use proptest::prelude::*;

    fn both(d: Decimal) -> (String, String, String, String) {
        let theirs = serde_json::to_string(&d).unwrap();
        #[derive(serde::Serialize)]
        struct Ours(#[serde(serialize_with = "ser")] Decimal);
        (DecimalText::of(d).as_str().to_string(), d.to_string(), serde_json::to_string(&Ours(d)).unwrap(), theirs)
    }

    #[test]
    fn writes_what_rust_decimal_writes_at_the_edges() {
        let edges = [
            Decimal::ZERO,
            Decimal::new(0, 2),
            Decimal::new(-0, 3),
            -Decimal::new(0, 2),
            Decimal::new(5, 2),
            Decimal::new(-5, 28),
            Decimal::new(1, 28),
            Decimal::new(10050, 2),
            Decimal::new(-10050, 0),
            Decimal::new(i64::MAX, 0),
            Decimal::new(i64::MIN, 5),
            Decimal::from_i128_with_scale(u64::MAX as i128, 3),
            Decimal::from_i128_with_scale(u64::MAX as i128 + 1, 3),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(-(u64::MAX as i128), 28),
        ];
        for d in edges {
            let (text, display, ours, theirs) = both(d);
            assert_eq!(text, display, "{d:?}");
            assert_eq!(ours, theirs, "{d:?}");
        }
    }

    proptest! {
        #[test]
        fn writes_what_rust_decimal_writes(lo in any::<u32>(), mid in any::<u32>(), hi in prop_oneof![Just(0u32), any::<u32>()], negative in any::<bool>(), scale in 0u32..=28) {
            let d = Decimal::from_parts(lo, mid, hi, negative, scale);
            let (text, display, ours, theirs) = both(d);
            prop_assert_eq!(text, display);
            prop_assert_eq!(ours, theirs);
        }
    }
}
