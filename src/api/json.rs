//! Compact JSON text, byte for byte what `serde_json::to_writer` writes, only cheaper
//! for strings.
//!
//! serde_json escapes a string one byte at a time (a table lookup and two slice splits
//! per byte), field names included. The order path writes ~5 events, a journal record
//! and an answer per order, each a dozen or more named strings (ids, decimals, times):
//! that loop was 7.6 % of the trading lane's instructions (BENCHMARKS.md, session 41).
//! Here a string is checked 32 bytes at a time by a loop without early exit (the
//! compiler turns it into vector compares) and copied whole when nothing in it needs
//! escaping, which is every string of the order path.
//!
//! Everything else follows serde_json: numbers and floats are written by serde_json
//! itself, map keys are quoted as its `MapKeySerializer` quotes them, and a
//! `serde_json::value::RawValue` is written verbatim. The tests compare the two writers
//! on arbitrary values.

use serde::ser::{self, Error as _, Serialize};
use std::fmt::Write as _;

type Error = serde_json::Error;
type Result<T = ()> = std::result::Result<T, Error>;

/// `t` as compact JSON appended to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, t: &T) -> Result {
    t.serialize(&mut Writer { out })
}

/// `t` as compact JSON text.
pub fn to_string<T: Serialize + ?Sized>(t: &T) -> Result<String> {
    let mut out = Vec::new();
    write(&mut out, t)?;
    Ok(String::from_utf8(out).expect("JSON text is UTF-8"))
}

/// The name under which `serde_json::value::RawValue` serializes its text (serde_json's
/// private token, stable across its 1.x releases).
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// Appends `s` as a JSON string, quoted and escaped.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    if is_plain(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
    } else {
        escape(out, s.as_bytes());
    }
    out.push(b'"');
}

/// Whether no byte of `bytes` needs escaping (a control character, `"` or `\\`),
/// checked eight bytes at a time with no early exit: a string shorter than eight is
/// padded with spaces, and a longer one's last word overlaps the one before it. Most of
/// the order path's strings are field names and short values, so a call costs a few
/// dozen instructions instead of several per byte.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("eight bytes"));
    let n = bytes.len();
    if n < 8 {
        // Shifted in a byte at a time: copying into a padded array called memcpy.
        let padded = bytes.iter().fold(u64::from_ne_bytes([b' '; 8]), |w, &b| (w << 8) | u64::from(b));
        return escapes_in(padded) == 0;
    }
    let mut found = escapes_in(word(&bytes[n - 8..]));
    for at in (0..n - 8).step_by(8) {
        found |= escapes_in(word(&bytes[at..at + 8]));
    }
    found == 0
}

/// Non-zero when a byte of the word `v` is below 0x20, `"` or `\\`: "some byte is below
/// n" and "some byte is zero" (after an XOR with the quote, or the backslash, in every
/// byte) are each three operations (Stanford's "Bit Twiddling Hacks"), exact for whether
/// any byte matches. Bytes of 0x80 and above (UTF-8) never match.
#[inline]
fn escapes_in(v: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    below(v, 0x20) | zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\')))
}

/// Appends `bytes` escaped as serde_json escapes them: the short forms where JSON has
/// one, `\u00XX` (lower-case hex) for the other control characters.
#[cold]
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
            _ => out.push(b),
        }
    }
}

/// A number written by serde_json (itoa, ryu, `null` for a float that is not finite).
fn write_number<T: Serialize>(out: &mut Vec<u8>, n: T) -> Result {
    serde_json::to_writer(out, &n)
}

/// Lets `collect_str` write a `Display` straight into the output, escaped, with no
/// `String` in between.
struct Escaping<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if is_plain(s.as_bytes()) {
            self.0.extend_from_slice(s.as_bytes());
        } else {
            escape(self.0, s.as_bytes());
        }
        Ok(())
    }
}

pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// A sequence, map or struct being written: whether an element has been written yet
/// (a comma goes before every other one), and what closes it (`}}` or `]}` for the
/// variants, which wrap it in an object named by the variant).
pub struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    close: &'static [u8],
}

impl<'w, 'a> Compound<'w, 'a> {
    fn open(w: &'w mut Writer<'a>, open: &[u8], close: &'static [u8]) -> Self {
        w.out.extend_from_slice(open);
        Compound { w, first: true, close }
    }

    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.w.out.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.comma();
        value.serialize(&mut *self.w)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result {
        let out = &mut *self.w.out;
        let comma = !std::mem::take(&mut self.first);
        if is_plain(key.as_bytes()) {
            out.extend_from_slice(&b",\""[usize::from(!comma)..]);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
        } else {
            if comma {
                out.push(b',');
            }
            write_str(out, key);
            out.push(b':');
        }
        value.serialize(&mut *self.w)
    }

    fn close(self) -> Result {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

/// `{"variant":` before a variant's content.
fn open_variant(out: &mut Vec<u8>, variant: &str) {
    out.push(b'{');
    write_str(out, variant);
    out.push(b':');
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = StructWriter<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result {
        write_number(self.out, v)
    }
    fn serialize_i16(self, v: i16) -> Result {
        write_number(self.out, v)
    }
    fn serialize_i32(self, v: i32) -> Result {
        write_number(self.out, v)
    }
    fn serialize_i64(self, v: i64) -> Result {
        write_number(self.out, v)
    }
    fn serialize_i128(self, v: i128) -> Result {
        write_number(self.out, v)
    }
    fn serialize_u8(self, v: u8) -> Result {
        write_number(self.out, v)
    }
    fn serialize_u16(self, v: u16) -> Result {
        write_number(self.out, v)
    }
    fn serialize_u32(self, v: u32) -> Result {
        write_number(self.out, v)
    }
    fn serialize_u64(self, v: u64) -> Result {
        write_number(self.out, v)
    }
    fn serialize_u128(self, v: u128) -> Result {
        write_number(self.out, v)
    }
    fn serialize_f32(self, v: f32) -> Result {
        write_number(self.out, v)
    }
    fn serialize_f64(self, v: f64) -> Result {
        write_number(self.out, v)
    }
    fn serialize_char(self, v: char) -> Result {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        open_variant(self.out, variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'w, 'a>> {
        Ok(Compound::open(self, b"[", b"]"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _name: &'static str, _index: u32, variant: &'static str, _len: usize) -> Result<Compound<'w, 'a>> {
        open_variant(self.out, variant);
        Ok(Compound::open(self, b"[", b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'w, 'a>> {
        Ok(Compound::open(self, b"{", b"}"))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<StructWriter<'w, 'a>> {
        if name == RAW_VALUE {
            return Ok(StructWriter::Raw(self));
        }
        Ok(StructWriter::Fields(Compound::open(self, b"{", b"}")))
    }
    fn serialize_struct_variant(self, _name: &'static str, _index: u32, variant: &'static str, _len: usize) -> Result<Compound<'w, 'a>> {
        open_variant(self.out, variant);
        Ok(Compound::open(self, b"{", b"}}"))
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result {
        self.out.push(b'"');
        write!(Escaping(self.out), "{value}").map_err(|_| Error::custom("a Display implementation returned an error"))?;
        self.out.push(b'"');
        Ok(())
    }
}

/// The sequences' traits: each element after a comma.
macro_rules! elements {
    ($($trait:ident::$method:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }
            fn end(self) -> Result {
                self.close()
            }
        })*
    };
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.comma();
        key.serialize(KeyWriter { out: self.w.out })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.w.out.push(b':');
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result {
        self.close()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.field(key, value)
    }
    fn end(self) -> Result {
        self.close()
    }
}

/// A struct being written: its fields, or the text of a `RawValue`.
pub enum StructWriter<'w, 'a> {
    Fields(Compound<'w, 'a>),
    Raw(&'w mut Writer<'a>),
}

impl ser::SerializeStruct for StructWriter<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        match self {
            StructWriter::Fields(fields) => fields.field(key, value),
            StructWriter::Raw(w) => match serde_json::to_value(value)? {
                serde_json::Value::String(text) => {
                    w.out.extend_from_slice(text.as_bytes());
                    Ok(())
                }
                _ => Err(Error::custom("expected RawValue")),
            },
        }
    }
    fn end(self) -> Result {
        match self {
            StructWriter::Fields(fields) => fields.close(),
            StructWriter::Raw(_) => Ok(()),
        }
    }
}

/// Writes a map key as serde_json does: a string as itself, a number, a bool or a unit
/// variant as a string of its text; anything else is refused.
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl KeyWriter<'_> {
    fn quoted<T: Serialize>(self, v: T) -> Result {
        self.out.push(b'"');
        write_number(self.out, v)?;
        self.out.push(b'"');
        Ok(())
    }
    fn quoted_float(self, finite: bool, v: impl Serialize) -> Result {
        if !finite {
            return Err(Error::custom("float key must be finite (got NaN or +/-inf)"));
        }
        self.quoted(v)
    }
}

/// Serializer methods that refuse what they are given, with `$error`.
macro_rules! refuse {
    ($error:expr; $(fn $name:ident $(<$t:ident>)? ($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name $(<$t: Serialize + ?Sized>)? (self, $($arg: $ty),*) -> $ret {
            Err($error)
        })*
    };
}

fn key_must_be_a_string() -> Error {
    Error::custom("key must be a string")
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> Result {
        self.out.extend_from_slice(if v { b"\"true\"" } else { b"\"false\"" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result {
        self.quoted(v)
    }
    fn serialize_i16(self, v: i16) -> Result {
        self.quoted(v)
    }
    fn serialize_i32(self, v: i32) -> Result {
        self.quoted(v)
    }
    fn serialize_i64(self, v: i64) -> Result {
        self.quoted(v)
    }
    fn serialize_i128(self, v: i128) -> Result {
        self.quoted(v)
    }
    fn serialize_u8(self, v: u8) -> Result {
        self.quoted(v)
    }
    fn serialize_u16(self, v: u16) -> Result {
        self.quoted(v)
    }
    fn serialize_u32(self, v: u32) -> Result {
        self.quoted(v)
    }
    fn serialize_u64(self, v: u64) -> Result {
        self.quoted(v)
    }
    fn serialize_u128(self, v: u128) -> Result {
        self.quoted(v)
    }
    fn serialize_f32(self, v: f32) -> Result {
        self.quoted_float(v.is_finite(), v)
    }
    fn serialize_f64(self, v: f64) -> Result {
        self.quoted_float(v.is_finite(), v)
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result {
        self.out.push(b'"');
        write!(Escaping(self.out), "{value}").map_err(|_| Error::custom("a Display implementation returned an error"))?;
        self.out.push(b'"');
        Ok(())
    }
    refuse! {
        key_must_be_a_string();
        fn serialize_bytes(_v: &[u8]) -> Result;
        fn serialize_none() -> Result;
        fn serialize_unit() -> Result;
        fn serialize_unit_struct(_name: &'static str) -> Result;
        fn serialize_newtype_variant<T>(_name: &'static str, _index: u32, _variant: &'static str, _value: &T) -> Result;
        fn serialize_seq(_len: Option<usize>) -> Result<Self::SerializeSeq>;
        fn serialize_tuple(_len: usize) -> Result<Self::SerializeTuple>;
        fn serialize_tuple_struct(_name: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct>;
        fn serialize_tuple_variant(_name: &'static str, _index: u32, _variant: &'static str, _len: usize) -> Result<Self::SerializeTupleVariant>;
        fn serialize_map(_len: Option<usize>) -> Result<Self::SerializeMap>;
        fn serialize_struct(_name: &'static str, _len: usize) -> Result<Self::SerializeStruct>;
        fn serialize_struct_variant(_name: &'static str, _index: u32, _variant: &'static str, _len: usize) -> Result<Self::SerializeStructVariant>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn ours<T: Serialize + ?Sized>(t: &T) -> String {
        let mut out = Vec::new();
        write(&mut out, t).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn theirs<T: Serialize + ?Sized>(t: &T) -> String {
        serde_json::to_string(t).unwrap()
    }

    /// Strings that exercise the escaper: every control character, quotes, backslashes,
    /// multi-byte characters, and lengths around the chunk size.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 .:_-]{0,80}",
            proptest::collection::vec(
                prop_oneof![any::<char>(), (0u8..0x20).prop_map(char::from), Just('"'), Just('\\'), Just('é'), Just('\u{7f}')],
                0..80
            )
            .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes_for_any_value(v in value()) {
            prop_assert_eq!(ours(&v), theirs(&v));
        }

        #[test]
        fn writes_any_string_as_serde_json_does(s in text()) {
            prop_assert_eq!(ours(&s), theirs(&s));
            prop_assert_eq!(ours(&format_args!("{s}")), theirs(&format_args!("{s}")));
        }
    }

    /// A map of one entry whose key is `K`: for the keys a `BTreeMap` cannot hold.
    struct OneKey<K>(K);

    impl<K: Serialize> Serialize for OneKey<K> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(&self.0, &1)?;
            m.end()
        }
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { a: Option<u8>, b: &'static str },
    }

    #[derive(serde::Serialize)]
    struct Everything {
        unit: (),
        chars: [char; 3],
        bytes: &'static [u8],
        shapes: Vec<Shape>,
        empty: Vec<u8>,
        tuple: (u8, f32, bool),
        floats: [f64; 4],
        wide: (i128, u128),
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        int_keys: BTreeMap<i64, u8>,
        bool_keys: BTreeMap<bool, u8>,
        float_key: OneKey<f64>,
        char_key: OneKey<char>,
        variant_key: OneKey<Shape>,
        decimal: rust_decimal::Decimal,
        raw: Box<serde_json::value::RawValue>,
        nested: Value,
    }

    #[test]
    fn writes_every_serde_shape_as_serde_json_does() {
        let e = Everything {
            unit: (),
            chars: ['a', '"', '\u{1}'],
            bytes: b"\x00\xff",
            shapes: vec![Shape::Unit, Shape::Newtype(7), Shape::Tuple(-1, "t\n".into()), Shape::Struct { a: None, b: "b" }],
            empty: vec![],
            tuple: (1, 0.1, false),
            floats: [1.5, -0.0, f64::NAN, f64::INFINITY],
            wide: (i128::MIN, u128::MAX),
            skipped: None,
            int_keys: [(-3, 1), (4, 2)].into(),
            bool_keys: [(true, 1), (false, 0)].into(),
            float_key: OneKey(2.5),
            char_key: OneKey('\\'),
            variant_key: OneKey(Shape::Unit),
            decimal: "12.3400".parse().unwrap(),
            raw: serde_json::value::RawValue::from_string(r#"{"kept" : [1, 2]}"#.into()).unwrap(),
            nested: json!({"a": [1, {"b": null}], "c\t": "d"}),
        };
        assert_eq!(ours(&e), theirs(&e));
    }

    #[test]
    fn refuses_the_keys_serde_json_refuses() {
        fn both_refuse<T: Serialize>(t: &T) -> bool {
            write(&mut Vec::new(), t).is_err() && serde_json::to_vec(t).is_err()
        }
        assert!(both_refuse(&OneKey((1, 2))));
        assert!(both_refuse(&OneKey(f64::NAN)));
        assert!(both_refuse(&OneKey(())));
        assert!(both_refuse(&OneKey(Shape::Newtype(1))));
    }
}
