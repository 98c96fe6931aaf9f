//! Historical OHLCV bars from CSV (`agt market import FILE.csv`, `POST /api/market/import`).
//!
//! The format (README "Market data import"):
//!
//! ```text
//! symbol,interval,open_time,open,high,low,close,volume
//! AAPL,1d,2024-05-01T00:00:00Z,169.58,172.71,169.11,169.30,50383100
//! AAPL,1m,1714571100,170.10,170.25,170.02,170.20,1200
//! ```
//!
//! - The first line that is neither blank nor a `#` comment is the header. It names the
//!   eight columns above, in any order (case does not matter), and nothing else.
//! - `interval` is one of `1s 1m 5m 1h 1d`; `open_time` is RFC 3339
//!   (`2024-05-01T13:45:00Z`), Unix seconds, or a date (`2024-05-01`, midnight UTC), and
//!   must be the start of a bar of that interval (a whole multiple of it since
//!   1970-01-01T00:00:00Z) and not in the future.
//! - Prices are decimals > 0, the volume a decimal >= 0, written as text (`170.25`,
//!   never `1.7e2`); `low <= open, close <= high`; prices on the instrument's tick.
//! - Fields may be double-quoted (`"1,000"` is still not a decimal, though: no thousands
//!   separators). Blank lines and lines starting with `#` are skipped.
//!
//! Parsing ([`parse`]) needs no state and runs outside the market actor; the actor then
//! checks the symbols ([`check`]) and writes every bar in one transaction, or none.

use super::candles::Interval;
use crate::api::quote::quoted;
use crate::api::ApiError;
use rust_decimal::Decimal;
use std::collections::HashMap;

/// The columns, in the documented order.
pub const COLUMNS: [&str; 8] = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume"];

/// The most bad rows an error lists (the count says how many more there were).
pub const MAX_REPORTED: usize = 50;

/// The most bars one import takes.
pub const MAX_ROWS: usize = 1_000_000;

/// One valid bar of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportBar {
    pub symbol: String,
    pub interval: Interval,
    /// Unix seconds, aligned to `interval`.
    pub open_time: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
}

/// One data line of the file: its line number (1-based, counting every line), the symbol
/// it names, and the bar or what is wrong with it.
#[derive(Debug, Clone)]
pub struct CsvRow {
    pub line: usize,
    pub symbol: String,
    pub bar: Result<ImportBar, Vec<String>>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid("invalid_csv", message)
}

/// Splits one CSV line into trimmed fields. Double quotes enclose a field (with `""` for a
/// quote inside it); a field cannot span lines.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Skip spaces before a field, so `a, "b"` reads like `a,"b"`.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    field.push(c);
                }
            }
            if !closed {
                return Err("a quoted field has no closing '\"' (a field cannot span lines)".into());
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field (fields are separated by ',')")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

/// Where each column sits in a row, from the header.
struct Layout {
    index: [usize; 8],
    width: usize,
}

fn header(line_no: usize, line: &str) -> Result<Layout, ApiError> {
    let expected = COLUMNS.join(",");
    let fields = split_fields(line).map_err(|e| invalid(format!("line {line_no} (the header): {e}; it must be `{expected}`")))?;
    let mut index = [usize::MAX; 8];
    let mut unknown = Vec::new();
    let mut repeated = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let name = f.trim().to_ascii_lowercase();
        match COLUMNS.iter().position(|c| *c == name) {
            Some(k) if index[k] != usize::MAX => repeated.push(COLUMNS[k]),
            Some(k) => index[k] = i,
            None => unknown.push(quoted(f)),
        }
    }
    let missing: Vec<&str> = COLUMNS.iter().zip(index).filter(|(_, i)| *i == usize::MAX).map(|(c, _)| *c).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing column(s) {}", missing.join(", ")));
    }
    if !unknown.is_empty() {
        problems.push(format!("unknown column(s) {}", unknown.join(", ")));
    }
    if !repeated.is_empty() {
        problems.push(format!("repeated column(s) {}", repeated.join(", ")));
    }
    if !problems.is_empty() {
        return Err(invalid(format!(
            "line {line_no} (the header): {}; the header must be `{expected}` (see README, \"Market data import\")",
            problems.join("; ")
        )));
    }
    Ok(Layout { index, width: fields.len() })
}

/// A bar's start, in Unix seconds, from RFC 3339, Unix seconds or a date.
fn parse_time(s: &str) -> Result<i64, String> {
    parse_time_named("open_time", s)
}

/// A whole second, from RFC 3339, Unix seconds or a date; an error names the value as
/// `name` and says which forms there are. Also the candles route's `from` and `to`.
pub fn parse_time_named(name: &str, s: &str) -> Result<i64, String> {
    let hint = "use RFC 3339 (2024-05-01T13:45:00Z), Unix seconds (1714571100) or a date (2024-05-01)";
    if s.is_empty() {
        return Err(format!("{name} is empty: {hint}"));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| format!("{name} {} is out of range: {hint}", quoted(s)))?;
        if secs >= 100_000_000_000 {
            return Err(format!("{name} {s} looks like milliseconds (or later than the year 5000): give Unix seconds"));
        }
        return Ok(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        // chrono keeps a leap second (`23:59:60`) as a second's worth of extra nanoseconds.
        if t.timestamp_subsec_nanos() >= 1_000_000_000 {
            return Err(format!("{name} {s} is a leap second: no bar starts there; use the second after it"));
        }
        if t.timestamp_subsec_nanos() != 0 {
            return Err(format!("{name} {s} has a fraction of a second: a bar starts on a whole second"));
        }
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if s.len() == 10 {
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp());
        }
    }
    Err(format!("{name} {} is not a time: {hint}", quoted(s)))
}

fn parse_decimal(name: &str, s: &str, positive: bool) -> Result<Decimal, String> {
    let ok_chars = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
    if !ok_chars {
        return Err(format!("{name} {} is not a decimal number (write it like 170.25, without exponent or separators)", quoted(s)));
    }
    // Exact or refused, as every amount the API takes: a 29th digit is not rounded away.
    let d = crate::api::decimal::parse(s).map_err(|e| format!("{name}: {e}"))?;
    if positive && d <= Decimal::ZERO {
        return Err(format!("{name} must be > 0, got {s}"));
    }
    if !positive && d < Decimal::ZERO {
        return Err(format!("{name} must not be negative, got {s}"));
    }
    Ok(d.normalize())
}

fn rfc3339(secs: i64) -> String {
    super::candles::rfc3339(secs)
}

/// Reads one data row; every problem it has, not just the first.
fn row(layout: &Layout, fields: &[String], now_secs: i64) -> Result<ImportBar, Vec<String>> {
    let f = |k: usize| fields[layout.index[k]].as_str();
    let mut problems = Vec::new();
    let symbol = f(0).to_string();
    if symbol.is_empty() {
        problems.push("symbol is empty".to_string());
    }
    let interval = Interval::parse(f(1));
    if interval.is_none() {
        problems.push(format!("interval {} is not one of {}", quoted(f(1)), Interval::allowed()));
    }
    let open_time = match parse_time(f(2)) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    if let (Some(t), Some(iv)) = (open_time, interval) {
        if t < 0 {
            problems.push(format!("open_time {} is before 1970", f(2)));
        } else if t.rem_euclid(iv.seconds()) != 0 {
            problems.push(format!(
                "open_time {} is not the start of a {} bar (bars start at whole multiples of the interval since 1970-01-01 UTC): use {}",
                f(2),
                iv.as_str(),
                rfc3339(t - t.rem_euclid(iv.seconds()))
            ));
        } else if t > now_secs {
            problems.push(format!("open_time {} ({}) is in the future", f(2), rfc3339(t)));
        }
    }
    let mut price = |k: usize| match parse_decimal(COLUMNS[k], f(k), true) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let (open, high, low, close) = (price(3), price(4), price(5), price(6));
    let volume = match parse_decimal("volume", f(7), false) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    if let (Some(h), Some(l)) = (high, low) {
        if h < l {
            problems.push(format!("high {h} is below low {l}"));
        } else {
            for (name, v) in [("open", open), ("close", close)] {
                if let Some(v) = v.filter(|v| *v < l || *v > h) {
                    problems.push(format!("{name} {v} is outside the bar's range [low {l}, high {h}]"));
                }
            }
        }
    }
    match (interval, open_time, open, high, low, close, volume) {
        (Some(interval), Some(open_time), Some(open), Some(high), Some(low), Some(close), Some(volume)) if problems.is_empty() => {
            Ok(ImportBar { symbol, interval, open_time, open, high, low, close, volume })
        }
        _ => Err(problems),
    }
}

/// Reads a whole file. A header that is wrong, a file without bars or one with more than
/// [`MAX_ROWS`] is refused at once; otherwise every data row comes back, good or bad, so
/// that all the bad ones can be reported together.
pub fn parse(text: &str, now_secs: i64) -> Result<Vec<CsvRow>, ApiError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut layout: Option<Layout> = None;
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, Interval, i64), usize> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some(l) = &layout else {
            layout = Some(header(line_no, line)?);
            continue;
        };
        if rows.len() >= MAX_ROWS {
            return Err(invalid(format!("the file has more than {MAX_ROWS} bars: split it and import the parts one by one")));
        }
        let fields = match split_fields(line) {
            Ok(f) => f,
            Err(e) => {
                rows.push(CsvRow { line: line_no, symbol: String::new(), bar: Err(vec![e]) });
                continue;
            }
        };
        if fields.len() != l.width {
            let symbol = fields.get(l.index[0]).cloned().unwrap_or_default();
            let problem = format!("has {} field(s) but the header has {}", fields.len(), l.width);
            rows.push(CsvRow { line: line_no, symbol, bar: Err(vec![problem]) });
            continue;
        }
        let symbol = fields[l.index[0]].clone();
        let mut bar = row(l, &fields, now_secs);
        if let Ok(b) = &bar {
            let key = (b.symbol.clone(), b.interval, b.open_time);
            if let Some(first) = seen.get(&key) {
                bar = Err(vec![format!(
                    "repeats the {} bar of {} at {} from line {first}",
                    b.interval.as_str(),
                    b.symbol,
                    rfc3339(b.open_time)
                )]);
            } else {
                seen.insert(key, line_no);
            }
        }
        rows.push(CsvRow { line: line_no, symbol, bar });
    }
    if layout.is_none() {
        return Err(invalid(format!("the file is empty: it needs the header `{}` and one bar per line", COLUMNS.join(","))));
    }
    if rows.is_empty() {
        return Err(invalid("the file has a header but no bars"));
    }
    Ok(rows)
}

/// The bars, if every row is good, names a known symbol and has its prices on that
/// symbol's tick; else 400 `invalid_csv` listing the bad rows by line (the first
/// [`MAX_REPORTED`]). `tick` gives a known symbol's tick size. An imported close becomes
/// the symbol's last price, which anchors the price band, so it must be a price an order
/// could trade at.
pub fn check(rows: Vec<CsvRow>, tick: impl Fn(&str) -> Option<Decimal>) -> Result<Vec<(usize, ImportBar)>, ApiError> {
    let total = rows.len();
    let mut bad: Vec<String> = Vec::new();
    let mut bars = Vec::with_capacity(total);
    let known = |s: &str| tick(s).is_some();
    for r in rows {
        let mut problems = match r.bar {
            Ok(b) => match tick(&b.symbol) {
                Some(t) => {
                    let off: Vec<String> = [("open", b.open), ("high", b.high), ("low", b.low), ("close", b.close)]
                        .into_iter()
                        .filter(|(_, p)| !(p % t).is_zero())
                        .map(|(name, p)| format!("{name} {p} is not a multiple of {}'s tick {t}", b.symbol))
                        .collect();
                    if off.is_empty() {
                        bars.push((r.line, b));
                        continue;
                    }
                    off
                }
                None => Vec::new(),
            },
            Err(p) => p,
        };
        if !r.symbol.is_empty() && !known(&r.symbol) {
            let upper = r.symbol.to_ascii_uppercase();
            let hint = if upper != r.symbol && known(&upper) {
                format!(" (symbols are upper-case: {upper})")
            } else {
                " (add it first with `agt symbol add`)".to_string()
            };
            problems.insert(0, format!("unknown symbol {}{hint}", quoted(&r.symbol)));
        }
        bad.push(format!("line {}: {}", r.line, problems.join("; ")));
    }
    if bad.is_empty() {
        return Ok(bars);
    }
    let mut message = format!("{} of {total} row(s) are bad, so nothing was imported; fix them and import the file again:", bad.len());
    for b in bad.iter().take(MAX_REPORTED) {
        message.push_str("\n  ");
        message.push_str(b);
    }
    if bad.len() > MAX_REPORTED {
        message.push_str(&format!("\n  … and {} more bad row(s)", bad.len() - MAX_REPORTED));
    }
    Err(invalid(message))
}

/// The moment an imported bar's close stands for, as the last price: the end of its
/// interval, or `now_us` for a bar that has not ended yet.
pub fn as_of_us(b: &ImportBar, now_us: i64) -> i64 {
    ((b.open_time + b.interval.seconds()) * 1_000_000 - 1).min(now_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// 2024-05-01T00:00:00Z.
    const DAY: i64 = 1_714_521_600;
    const NOW: i64 = DAY + 10 * 86_400;

    fn known(s: &str) -> Option<Decimal> {
        match s {
            "AAPL" => Some(d("0.01")),
            "BTC-USD" => Some(d("0.5")),
            _ => None,
        }
    }

    fn errors(text: &str) -> String {
        match parse(text, NOW).and_then(|rows| check(rows, known)) {
            Ok(b) => panic!("expected an error, got {b:?}"),
            Err(e) => {
                assert_eq!((e.status, e.code.as_ref()), (400, "invalid_csv"));
                e.message
            }
        }
    }

    #[test]
    fn a_good_file_gives_every_bar() {
        let text = "\u{feff}symbol,interval,open_time,open,high,low,close,volume\r\n\
                    # a comment\r\n\
                    AAPL,1d,2024-05-01T00:00:00Z,169.58,172.71,169.11,169.30,50383100\r\n\
                    \r\n\
                    AAPL, 1m ,1714521660,170.10,170.25,170.02,170.20,1200\n\
                    \"BTC-USD\",1h,2024-05-01,60000.5,61000,59000,60500.00,12.5\n";
        let bars = check(parse(text, NOW).unwrap(), known).unwrap();
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[0].0, 3);
        assert_eq!(
            bars[0].1,
            ImportBar {
                symbol: "AAPL".into(),
                interval: Interval::D1,
                open_time: DAY,
                open: d("169.58"),
                high: d("172.71"),
                low: d("169.11"),
                close: d("169.3"),
                volume: d("50383100"),
            }
        );
        assert_eq!((bars[1].0, bars[1].1.interval, bars[1].1.open_time), (5, Interval::M1, DAY + 60));
        assert_eq!((bars[2].1.symbol.as_str(), bars[2].1.open_time, bars[2].1.close), ("BTC-USD", DAY, d("60500")));
        // Columns in another order, names in any case.
        let text = "Close,SYMBOL,volume,open,high,low,interval,open_time\n10,AAPL,0,10,10,10,1s,1714521601\n";
        let bars = check(parse(text, NOW).unwrap(), known).unwrap();
        assert_eq!((bars[0].1.close, bars[0].1.open_time, bars[0].1.volume), (d("10"), DAY + 1, d("0")));
    }

    #[test]
    fn a_wrong_header_is_refused_whole() {
        for (text, want) in [
            ("", "the file is empty"),
            ("# only a comment\n\n", "the file is empty"),
            ("symbol,interval,open_time,open,high,low,close,volume\n", "no bars"),
            ("symbol,interval,time,open,high,low,close,volume\nAAPL,1m,0,1,1,1,1,1\n", "missing column(s) open_time"),
            ("symbol,interval,open_time,open,high,low,close,volume,vwap\n", "unknown column(s) \"vwap\""),
            ("symbol,symbol,interval,open_time,open,high,low,close,volume\n", "repeated column(s) symbol"),
            ("AAPL,1m,1714521660,1,1,1,1,1\n", "line 1 (the header)"),
        ] {
            let e = parse(text, NOW).map(|_| ()).unwrap_err();
            assert_eq!(e.code, "invalid_csv");
            assert!(e.message.contains(want), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn a_leap_second_is_named_as_one() {
        let e = parse_time("2016-12-31T23:59:60Z").unwrap_err();
        assert!(e.contains("is a leap second"), "{e}");
        assert!(parse_time("2016-12-31T23:59:59.5Z").unwrap_err().contains("fraction of a second"));
        assert_eq!(parse_time("2017-01-01T00:00:00Z"), Ok(1_483_228_800));
    }

    #[test]
    fn every_bad_row_is_named_by_line_with_what_to_fix() {
        let text = "symbol,interval,open_time,open,high,low,close,volume
AAPL,1m,2024-05-01T00:00:00Z,10,11,9,10.5,100
NOPE,1m,2024-05-01T00:01:00Z,10,11,9,10.5,100
AAPL,2m,2024-05-01T00:02:00Z,10,11,9,10.5,100
AAPL,1m,2024-05-01T00:03:00Z,10,9,11,10,100
AAPL,1m,2024-05-01T00:04:00Z,12,11,9,10,100
AAPL,1m,2024-05-01T00:05:00Z,10,11,9,8,100
AAPL,1m,2024-05-01T00:06:00Z,10,11,9,10,-5
AAPL,1m,2024-05-01T00:07:00Z,ten,11,9,10,100
AAPL,1m,yesterday,10,11,9,10,100
AAPL,1m,2024-05-01T00:08:30Z,10,11,9,10,100
AAPL,1m,2024-05-01T00:00:00Z,10,11,9,10,100
AAPL,1m,2024-05-01T00:09:00Z,10,11,9
aapl,1m,2024-05-01T00:10:00Z,10,11,9,10,100
AAPL,1m,1714521600000,10,11,9,10,100
AAPL,1m,2099-01-01T00:00:00Z,10,11,9,10,100
AAPL,1m,2024-05-01T00:11:00Z,0,11,9,10,100
AAPL,1m,2024-05-01T00:12:00Z,1e1,11,9,10,100
AAPL,1d,2024-05-01T00:00:00.5Z,10,11,9,10,100
AAPL,1m,2024-05-01T00:14:00Z,10,11,9,10.0000000000000000000000000001,100
AAPL,1m,2024-05-01T00:13:00Z,10,11,9,10,100
";
        let m = errors(text);
        let lines: Vec<&str> = m.lines().skip(1).map(str::trim).collect();
        let want = [
            ("line 3:", "unknown symbol \"NOPE\""),
            ("line 4:", "interval \"2m\" is not one of 1s, 1m, 5m, 1h, 1d"),
            ("line 5:", "high 9 is below low 11"),
            ("line 6:", "open 12 is outside the bar's range [low 9, high 11]"),
            ("line 7:", "close 8 is outside"),
            ("line 8:", "volume must not be negative, got -5"),
            ("line 9:", "open \"ten\" is not a decimal number"),
            ("line 10:", "open_time \"yesterday\" is not a time"),
            ("line 11:", "is not the start of a 1m bar (bars start at whole multiples of the interval since 1970-01-01 UTC): use 2024-05-01T00:08:00Z"),
            ("line 12:", "repeats the 1m bar of AAPL at 2024-05-01T00:00:00Z from line 2"),
            ("line 13:", "has 6 field(s) but the header has 8"),
            ("line 14:", "unknown symbol \"aapl\" (symbols are upper-case: AAPL)"),
            ("line 15:", "looks like milliseconds"),
            ("line 16:", "is in the future"),
            ("line 17:", "open must be > 0, got 0"),
            ("line 18:", "open \"1e1\" is not a decimal number"),
            ("line 19:", "has a fraction of a second"),
            ("line 20:", "close: \"10.0000000000000000000000000001\" has more digits than agt keeps exactly"),
        ];
        assert_eq!(lines.len(), want.len(), "{m}");
        for ((prefix, text), line) in want.iter().zip(&lines) {
            assert!(line.starts_with(prefix) && line.contains(text), "want {prefix} … {text}\n got {line}");
        }
        assert!(m.starts_with("18 of 20 row(s) are bad, so nothing was imported"), "{m}");
        assert!(!m.contains("line 2:") && !m.contains("line 21:"), "{m}");
    }

    #[test]
    fn prices_off_the_symbols_tick_are_refused() {
        let m = errors(
            "symbol,interval,open_time,open,high,low,close,volume\n\
             AAPL,1m,2024-05-01T00:00:00Z,10,11,9,10.50,100\n\
             AAPL,1m,2024-05-01T00:01:00Z,10,11.005,9,10.001,100\n\
             BTC-USD,1m,2024-05-01T00:00:00Z,100.5,101,100.25,101,1\n",
        );
        assert!(m.starts_with("2 of 3 row(s) are bad"), "{m}");
        assert!(
            m.contains("line 3: high 11.005 is not a multiple of AAPL's tick 0.01; close 10.001 is not a multiple of AAPL's tick 0.01"),
            "{m}"
        );
        assert!(m.contains("line 4: low 100.25 is not a multiple of BTC-USD's tick 0.5"), "{m}");
        assert!(!m.contains("line 2:"), "{m}");
    }

    #[test]
    fn one_row_reports_all_its_problems_and_long_lists_are_cut() {
        let m = errors("symbol,interval,open_time,open,high,low,close,volume\nZZZ,7m,now,x,1,2,3,-1\n");
        assert!(m.contains("line 2: unknown symbol \"ZZZ\""), "{m}");
        for part in ["interval \"7m\"", "open_time \"now\"", "open \"x\"", "high 1 is below low 2", "volume must not be negative"] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let mut text = String::from("symbol,interval,open_time,open,high,low,close,volume\n");
        for i in 0..120 {
            text.push_str(&format!("AAPL,1m,{},1,1,1,1,x\n", DAY + 60 * i));
        }
        let m = errors(&text);
        assert!(m.starts_with("120 of 120 row(s) are bad"), "{m}");
        assert_eq!(m.lines().filter(|l| l.trim().starts_with("line ")).count(), MAX_REPORTED);
        assert!(m.ends_with("… and 70 more bad row(s)"), "{m}");
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(split_fields(r#"a, "b,c" ,"d""e",f "#).unwrap(), ["a", "b,c", "d\"e", "f"]);
        assert_eq!(split_fields("a,,b,").unwrap(), ["a", "", "b", ""]);
        assert!(split_fields(r#"a,"b"#).is_err());
        assert!(split_fields(r#"a,"b"x"#).is_err());
        let m = errors("symbol,interval,open_time,open,high,low,close,volume\nAAPL,1m,\"0,1,1,1,1,1\n");
        assert!(m.contains("line 2: a quoted field has no closing"), "{m}");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1714521600"), Ok(DAY));
        assert_eq!(parse_time("2024-05-01T00:00:00Z"), Ok(DAY));
        assert_eq!(parse_time("2024-05-01T02:00:00+02:00"), Ok(DAY));
        assert_eq!(parse_time("2024-05-01"), Ok(DAY));
        assert!(parse_time("2024-5-1").is_err());
        assert!(parse_time("").is_err());
        assert!(parse_time("99999999999999999999").is_err());
        let b = ImportBar {
            symbol: "AAPL".into(),
            interval: Interval::M1,
            open_time: DAY,
            open: d("1"),
            high: d("1"),
            low: d("1"),
            close: d("1"),
            volume: d("1"),
        };
        assert_eq!(as_of_us(&b, i64::MAX), (DAY + 60) * 1_000_000 - 1);
        assert_eq!(as_of_us(&b, DAY * 1_000_000 + 5), DAY * 1_000_000 + 5, "a bar still open stands for now");
    }
}
