//! OHLCV candles: which bar a trade belongs to and how it changes that bar.
//!
//! The arithmetic is plain functions over [`Bar`]s; the store keeps one row per
//! `(symbol, interval, open_time)` and [`Bars`] reads, updates and lists those rows.
//!
//! A bar remembers the timestamps of its first and last trade, so its open and close
//! follow the trades' timestamps rather than their arrival order: replaying or importing
//! trades out of order gives the same bars (ties go to the earlier arrival for the open
//! and to the later one for the close, matching the tape's order).

use super::tape::Print;
use crate::api::Candle;
use crate::services::store::DecimalText;
use foldhash::HashMap;
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use std::time::{Duration, Instant};

/// A candle width. Bars start on whole multiples of it since the Unix epoch, in UTC, so
/// `1d` bars start at midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    S1,
    M1,
    M5,
    H1,
    D1,
}

impl Interval {
    /// Every width, each kept up to date on every trade.
    pub const ALL: [Interval; 5] = [Interval::S1, Interval::M1, Interval::M5, Interval::H1, Interval::D1];

    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::H1 => "1h",
            Interval::D1 => "1d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Interval::S1 => 1,
            Interval::M1 => 60,
            Interval::M5 => 300,
            Interval::H1 => 3_600,
            Interval::D1 => 86_400,
        }
    }

    /// The start (Unix seconds) of the bar holding an instant given in microseconds.
    pub fn bucket(self, ts_us: i64) -> i64 {
        ts_us.div_euclid(1_000_000).div_euclid(self.seconds()) * self.seconds()
    }

    /// `"1s, 1m, 5m, 1h, 1d"`, for error messages.
    pub fn allowed() -> String {
        Interval::ALL.map(Interval::as_str).join(", ")
    }
}

/// One bar, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// Unix seconds of the bar's start.
    pub open_time: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub trades: u64,
    /// Timestamps (µs) of the trades that set `open` and `close`.
    pub first_us: i64,
    pub last_us: i64,
}

impl Bar {
    /// The bar a single trade opens.
    pub fn opened_by(interval: Interval, p: &Print) -> Bar {
        Bar {
            open_time: interval.bucket(p.ts_us),
            open: p.price,
            high: p.price,
            low: p.price,
            close: p.price,
            volume: p.quantity,
            trades: 1,
            first_us: p.ts_us,
            last_us: p.ts_us,
        }
    }

    /// An imported bar. It counts no trades; its open stands at its start and its close at
    /// `as_of_us` (its end, or the moment of the import for a bar still open: see
    /// [`super::import::as_of_us`]), the moment its close counts for as the last price. So
    /// a trade in the same interval widens it and adds volume, and becomes its close only
    /// if it is later than that.
    pub fn imported(b: &super::import::ImportBar, as_of_us: i64) -> Bar {
        Bar {
            open_time: b.open_time,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
            trades: 0,
            first_us: b.open_time * 1_000_000,
            last_us: as_of_us.max(b.open_time * 1_000_000),
        }
    }

    /// Adds a trade of this bar's interval to it.
    pub fn add(&mut self, p: &Print) {
        if p.ts_us < self.first_us {
            self.first_us = p.ts_us;
            self.open = p.price;
        }
        if p.ts_us >= self.last_us {
            self.last_us = p.ts_us;
            self.close = p.price;
        }
        self.high = self.high.max(p.price);
        self.low = self.low.min(p.price);
        self.volume = self.volume.saturating_add(p.quantity);
        self.trades += 1;
    }

    pub fn to_candle(&self, symbol: &str, interval: Interval) -> Candle {
        Candle {
            symbol: symbol.to_string(),
            interval: interval.as_str().to_string(),
            open_time: rfc3339(self.open_time),
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            trades: self.trades,
        }
    }
}

/// The bars of `interval` that a list of trades makes, oldest first (what the store's
/// bars must equal, whatever order the trades came in).
#[cfg(test)]
pub fn aggregate(interval: Interval, prints: &[Print]) -> Vec<Bar> {
    let mut bars: std::collections::BTreeMap<i64, Bar> = Default::default();
    for p in prints {
        bars.entry(interval.bucket(p.ts_us)).and_modify(|b| b.add(p)).or_insert_with(|| Bar::opened_by(interval, p));
    }
    bars.into_values().collect()
}

/// Unix seconds as the API writes a bar's start: `2024-05-01T12:34:00Z`.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// The bars in the store, with the bar each (symbol, interval) last touched kept in memory:
/// trades arrive in time order, so nearly every trade lands in that bar and costs no
/// read.
///
/// **Written at most four times a second, rebuilt from the tape.** A bar a trade changed is not
/// written with that trade's batch: five upserts per symbol for every small batch were
/// ~40 % of the market thread's instructions (session 37). Bars are derived data: the
/// trades that make them are on the tape, committed with the batch. So the store keeps,
/// beside the bars, the tape row up to which they include trades (`candles_through` in
/// `meta`, moved by each [`Bars::flush`] in the same transaction as the bars), and
/// [`Bars::load`] adds the trades past it again. A crash, a rolled-back batch (the actor
/// reloads the service) or a stop between two flushes therefore loses no bar, and none
/// counts a trade twice. Flushes come from the market service's `before_commit` once
/// [`FLUSH_EVERY`] has passed, and before anything reads bars (quotes, candles, imports).
pub struct Bars {
    /// By symbol, then by interval (in the order of [`Interval::ALL`]): a symbol is
    /// looked up by `&str`, without a `String` built per trade and interval.
    current: HashMap<String, [Option<Held>; 5]>,
    /// Changed bars a trade of a later (or earlier) bar pushed out of `current` before a
    /// flush wrote them; a trade of their own bar takes them back. At most [`FLUSH_EVERY`]'s worth.
    unwritten: Vec<(String, Interval, Bar)>,
    /// The tape row of the newest trade added to a bar, and the one the stored bars reach.
    through: i64,
    stored_through: i64,
    last_flush: Instant,
    flush_every: Duration,
}

/// How long changed bars may wait in memory before a batch's commit writes them. It bounds
/// what a start after a crash adds again: ~2,500 trades at 10,000 a second, ~15 ms before
/// the market is ready (a second's worth took 40–70 ms).
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Pushed-out bars that force a flush at the next commit, however recent the last one
/// (many symbols, or trades jumping between old bars).
const MAX_UNWRITTEN: usize = 4_096;

/// Which bars a reader asks for: those that start in `[from, to)` (Unix seconds; either
/// open), at most `limit` of them: the first `limit` from `from` when it is given (paging
/// forward through history), else the newest `limit` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: usize,
}

impl Span {
    /// The newest `limit` bars.
    pub fn newest(limit: usize) -> Span {
        Span { from: None, to: None, limit }
    }
}

/// A bar kept in memory, and whether the store has it as it is.
struct Held {
    bar: Bar,
    dirty: bool,
}

impl Bars {
    /// The bars as the store has them, with the trades the store's bars do not include
    /// yet (those after `candles_through`) added again in the order they reached the tape.
    pub fn load(conn: &Connection) -> rusqlite::Result<Bars> {
        let through: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'candles_through'", [], |r| r.get(0))?;
        let mut bars = Bars {
            current: HashMap::default(),
            unwritten: Vec::new(),
            through,
            stored_through: through,
            last_flush: Instant::now(),
            flush_every: FLUSH_EVERY,
        };
        let mut stmt = conn.prepare("SELECT id, symbol, price, quantity, ts_us FROM trades WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([through])?;
        while let Some(r) = rows.next()? {
            let symbol: String = r.get(1)?;
            let p = Print { ts_us: r.get(4)?, price: super::tape::decimal_at(r, 2)?, quantity: super::tape::decimal_at(r, 3)? };
            bars.record(conn, &symbol, &p, r.get(0)?)?;
        }
        Ok(bars)
    }

    /// Adds a trade (tape row `row`) to its bar of every interval.
    pub fn record(&mut self, tx: &Connection, symbol: &str, p: &Print, row: i64) -> rusqlite::Result<()> {
        let Bars { current, unwritten, .. } = self;
        if !current.contains_key(symbol) {
            current.insert(symbol.to_string(), Default::default());
        }
        let slots = current.get_mut(symbol).expect("inserted above");
        for (interval, slot) in Interval::ALL.into_iter().zip(slots.iter_mut()) {
            let open_time = interval.bucket(p.ts_us);
            if let Some(held) = slot.as_mut().filter(|h| h.bar.open_time == open_time) {
                held.bar.add(p);
                held.dirty = true;
                continue;
            }
            // Another bar takes this one's place in memory: keep it for the flush.
            if let Some(held) = slot.take().filter(|h| h.dirty) {
                unwritten.push((symbol.to_string(), interval, held.bar));
            }
            let pushed_out = unwritten.iter().position(|(s, i, b)| s == symbol && *i == interval && b.open_time == open_time);
            let mut bar = match pushed_out {
                Some(at) => Some(unwritten.swap_remove(at).2),
                None => read(tx, symbol, interval, open_time)?,
            };
            match &mut bar {
                Some(b) => b.add(p),
                None => bar = Some(Bar::opened_by(interval, p)),
            }
            *slot = bar.map(|bar| Held { bar, dirty: true });
        }
        self.through = self.through.max(row);
        Ok(())
    }

    /// [`Bars::flush`], if [`FLUSH_EVERY`] has passed since the last one (or too many bars
    /// wait).
    pub fn flush_if_due(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        if self.last_flush.elapsed() >= self.flush_every || self.unwritten.len() >= MAX_UNWRITTEN {
            self.flush(tx)?;
        }
        Ok(())
    }

    /// Writes the bars trades have changed since the last flush, and how far along the
    /// tape they now reach.
    pub fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        for (symbol, interval, bar) in self.unwritten.drain(..) {
            write(tx, &symbol, interval, &bar)?;
        }
        for (symbol, slots) in self.current.iter_mut() {
            for (interval, held) in Interval::ALL.into_iter().zip(slots.iter_mut()) {
                if let Some(held) = held.as_mut().filter(|h| h.dirty) {
                    write(tx, symbol, interval, &held.bar)?;
                    held.dirty = false;
                }
            }
        }
        if self.through != self.stored_through {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'candles_through'")?.execute([self.through])?;
            self.stored_through = self.through;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Keeps changed bars in memory for `every` (tests: to see what a stop before the
    /// flush leaves).
    #[cfg(test)]
    pub fn set_flush_every(&mut self, every: Duration) {
        self.flush_every = every;
    }

    /// Writes an imported bar over whatever the store had at its open time (a bar built
    /// from trades included).
    pub fn put(&mut self, tx: &Connection, symbol: &str, interval: Interval, bar: &Bar) -> rusqlite::Result<()> {
        write(tx, symbol, interval, bar)?;
        self.unwritten.retain(|(s, i, b)| !(s == symbol && *i == interval && b.open_time == bar.open_time));
        let at = Interval::ALL.iter().position(|i| *i == interval).expect("every interval is in ALL");
        if let Some(slot) = self.current.get_mut(symbol).map(|slots| &mut slots[at]) {
            if slot.as_ref().is_some_and(|h| h.bar.open_time == bar.open_time) {
                *slot = Some(Held { bar: bar.clone(), dirty: false });
            }
        }
        Ok(())
    }

    /// The bars of `span`, oldest first.
    pub fn list(tx: &Connection, symbol: &str, interval: Interval, span: Span) -> rusqlite::Result<Vec<Bar>> {
        const COLUMNS: &str = "open_time, open, high, low, close, volume, trades, first_us, last_us";
        let (from, to) = (span.from.unwrap_or(i64::MIN), span.to.unwrap_or(i64::MAX));
        let limit = span.limit.min(i64::MAX as usize) as i64;
        let sql = if span.from.is_some() {
            format!(
                "SELECT {COLUMNS} FROM candles WHERE symbol = ?1 AND interval = ?2 AND open_time >= ?3 AND open_time < ?4
                 ORDER BY open_time LIMIT ?5"
            )
        } else {
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM candles WHERE symbol = ?1 AND interval = ?2 AND open_time >= ?3
                 AND open_time < ?4 ORDER BY open_time DESC LIMIT ?5) ORDER BY open_time"
            )
        };
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![symbol, interval.as_str(), from, to, limit], row_to_bar)?;
        rows.collect()
    }

    /// The bars of `interval` that start at or after `from` (Unix seconds), oldest first.
    pub fn since(tx: &Connection, symbol: &str, interval: Interval, from: i64) -> rusqlite::Result<Vec<Bar>> {
        let mut stmt = tx.prepare_cached(
            "SELECT open_time, open, high, low, close, volume, trades, first_us, last_us FROM candles
             WHERE symbol = ?1 AND interval = ?2 AND open_time >= ?3 ORDER BY open_time",
        )?;
        let rows = stmt.query_map(params![symbol, interval.as_str(), from], row_to_bar)?;
        rows.collect()
    }
}

fn read(tx: &Connection, symbol: &str, interval: Interval, open_time: i64) -> rusqlite::Result<Option<Bar>> {
    tx.prepare_cached(
        "SELECT open_time, open, high, low, close, volume, trades, first_us, last_us FROM candles
         WHERE symbol = ?1 AND interval = ?2 AND open_time = ?3",
    )?
    .query_row(params![symbol, interval.as_str(), open_time], row_to_bar)
    .optional()
}

fn write(tx: &Connection, symbol: &str, interval: Interval, b: &Bar) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO candles (symbol, interval, open_time, open, high, low, close, volume, trades, first_us, last_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (symbol, interval, open_time) DO UPDATE SET open = excluded.open, high = excluded.high,
           low = excluded.low, close = excluded.close, volume = excluded.volume, trades = excluded.trades,
           first_us = excluded.first_us, last_us = excluded.last_us",
    )?
    .execute(params![
        symbol,
        interval.as_str(),
        b.open_time,
        DecimalText::of(b.open),
        DecimalText::of(b.high),
        DecimalText::of(b.low),
        DecimalText::of(b.close),
        DecimalText::of(b.volume),
        b.trades as i64,
        b.first_us,
        b.last_us
    ])?;
    Ok(())
}

fn row_to_bar(r: &rusqlite::Row) -> rusqlite::Result<Bar> {
    Ok(Bar {
        open_time: r.get(0)?,
        open: super::tape::decimal_at(r, 1)?,
        high: super::tape::decimal_at(r, 2)?,
        low: super::tape::decimal_at(r, 3)?,
        close: super::tape::decimal_at(r, 4)?,
        volume: super::tape::decimal_at(r, 5)?,
        trades: r.get::<_, i64>(6)? as u64,
        first_us: r.get(7)?,
        last_us: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// A trade at `secs` seconds (plus `us` microseconds) after the epoch.
    fn at(secs: i64, us: i64, price: &str, qty: &str) -> Print {
        Print { ts_us: secs * 1_000_000 + us, price: d(price), quantity: d(qty) }
    }

    /// 2024-05-01T00:00:00Z.
    const DAY: i64 = 1_714_521_600;

    #[test]
    fn intervals_parse_and_name_themselves() {
        for i in Interval::ALL {
            assert_eq!(Interval::parse(i.as_str()), Some(i));
        }
        for bad in ["", "1M", "2m", "1w", "60s", " 1m"] {
            assert_eq!(Interval::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Interval::allowed(), "1s, 1m, 5m, 1h, 1d");
    }

    #[test]
    fn a_trade_falls_in_the_bar_that_starts_at_its_floored_time() {
        // 2024-05-01T13:47:29.999999Z
        let ts = (DAY + 13 * 3600 + 47 * 60 + 29) * 1_000_000 + 999_999;
        assert_eq!(Interval::S1.bucket(ts), DAY + 13 * 3600 + 47 * 60 + 29);
        assert_eq!(Interval::M1.bucket(ts), DAY + 13 * 3600 + 47 * 60);
        assert_eq!(Interval::M5.bucket(ts), DAY + 13 * 3600 + 45 * 60);
        assert_eq!(Interval::H1.bucket(ts), DAY + 13 * 3600);
        assert_eq!(Interval::D1.bucket(ts), DAY);
        assert_eq!(rfc3339(Interval::M5.bucket(ts)), "2024-05-01T13:45:00Z");
        // A bar's start belongs to it; the instant before belongs to the previous bar.
        assert_eq!(Interval::M1.bucket(DAY * 1_000_000), DAY);
        assert_eq!(Interval::M1.bucket(DAY * 1_000_000 - 1), DAY - 60);
        // Before the epoch, floor rather than truncate towards zero.
        assert_eq!(Interval::D1.bucket(-1), -86_400);
    }

    #[test]
    fn bars_add_up_the_trades_of_each_interval() {
        let trades = [
            at(DAY + 10, 0, "100", "2"),       // 00:00:10
            at(DAY + 10, 500_000, "101", "1"), // 00:00:10.5
            at(DAY + 59, 0, "99.5", "3"),      // 00:00:59
            at(DAY + 60, 0, "102", "1"),       // 00:01:00
            at(DAY + 299, 0, "98", "4"),       // 00:04:59
            at(DAY + 300, 0, "103", "0.5"),    // 00:05:00
            at(DAY + 3600, 0, "97", "1"),      // 01:00:00
            at(DAY + 86_400, 0, "110", "2"),   // next day
        ];
        let s1 = aggregate(Interval::S1, &trades);
        assert_eq!(s1.len(), 7);
        assert_eq!(
            (s1[0].open_time, s1[0].open, s1[0].high, s1[0].low, s1[0].close, s1[0].volume, s1[0].trades),
            (DAY + 10, d("100"), d("101"), d("100"), d("101"), d("3"), 2)
        );

        let m1 = aggregate(Interval::M1, &trades);
        let summary: Vec<_> = m1.iter().map(|b| (b.open_time - DAY, b.open, b.high, b.low, b.close, b.volume, b.trades)).collect();
        assert_eq!(
            summary,
            vec![
                (0, d("100"), d("101"), d("99.5"), d("99.5"), d("6"), 3),
                (60, d("102"), d("102"), d("102"), d("102"), d("1"), 1),
                (240, d("98"), d("98"), d("98"), d("98"), d("4"), 1),
                (300, d("103"), d("103"), d("103"), d("103"), d("0.5"), 1),
                (3600, d("97"), d("97"), d("97"), d("97"), d("1"), 1),
                (86_400, d("110"), d("110"), d("110"), d("110"), d("2"), 1),
            ]
        );

        let m5 = aggregate(Interval::M5, &trades);
        assert_eq!(m5[0].open_time, DAY);
        assert_eq!((m5[0].open, m5[0].high, m5[0].low, m5[0].close), (d("100"), d("102"), d("98"), d("98")));
        assert_eq!((m5[0].volume, m5[0].trades), (d("11"), 5));
        assert_eq!((m5[1].open_time - DAY, m5[1].volume, m5[1].trades), (300, d("0.5"), 1));

        let h1 = aggregate(Interval::H1, &trades);
        assert_eq!(h1.len(), 3);
        assert_eq!((h1[0].open, h1[0].high, h1[0].low, h1[0].close), (d("100"), d("103"), d("98"), d("103")));
        assert_eq!((h1[0].volume, h1[0].trades), (d("11.5"), 6));

        let d1 = aggregate(Interval::D1, &trades);
        assert_eq!(d1.len(), 2);
        assert_eq!((d1[0].open_time, d1[0].open, d1[0].high, d1[0].low, d1[0].close), (DAY, d("100"), d("103"), d("97"), d("97")));
        assert_eq!((d1[0].volume, d1[0].trades), (d("12.5"), 7));
        assert_eq!((d1[1].open_time, d1[1].close, d1[1].volume), (DAY + 86_400, d("110"), d("2")));

        // Every interval accounts for every trade.
        for i in Interval::ALL {
            let bars = aggregate(i, &trades);
            assert_eq!(bars.iter().map(|b| b.trades).sum::<u64>(), 8, "{i:?}");
            assert_eq!(bars.iter().map(|b| b.volume).sum::<Decimal>(), d("14.5"), "{i:?}");
        }
    }

    #[test]
    fn open_and_close_follow_timestamps_not_arrival() {
        let a = at(DAY + 1, 0, "10", "1");
        let b = at(DAY + 20, 0, "30", "1");
        let c = at(DAY + 40, 0, "20", "1");
        let in_order = aggregate(Interval::M1, &[a.clone(), b.clone(), c.clone()]);
        let shuffled = aggregate(Interval::M1, &[c.clone(), a.clone(), b.clone()]);
        assert_eq!(in_order, shuffled);
        assert_eq!((in_order[0].open, in_order[0].close), (d("10"), d("20")));
        // Same timestamp: the first to arrive opens, the last to arrive closes.
        let x = at(DAY, 0, "1", "1");
        let y = at(DAY, 0, "2", "1");
        let bar = &aggregate(Interval::M1, &[x, y])[0];
        assert_eq!((bar.open, bar.close), (d("1"), d("2")));
    }
}
