//! The trades tape: every trade once, the last price per symbol, and 24-hour figures.
//!
//! Trades are ordered by their timestamp, then by the order they reached the tape (the
//! row id), so trades of one match that share a timestamp keep the engine's order.

use super::candles::{Bars, Interval};
use crate::api::{Side, Trade};
use crate::services::store::DecimalText;
use foldhash::{HashMap, HashMapExt};
use rusqlite::{params, Connection};
use rust_decimal::Decimal;
use std::str::FromStr;

/// What candles and statistics need of a trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Print {
    /// Microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    pub price: Decimal,
    pub quantity: Decimal,
}

const DAY_US: i64 = 86_400 * 1_000_000;

/// An RFC 3339 timestamp as microseconds since the epoch.
pub fn micros(timestamp: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(timestamp.trim()).ok().map(|t| t.timestamp_micros())
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A decimal stored as text; a bad one is a corrupt store, reported as a conversion error.
pub fn decimal_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Decimal> {
    let s: String = r.get(i)?;
    Decimal::from_str(&s).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// Volume, range and count of the trades in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub volume: Decimal,
    pub high: Option<Decimal>,
    pub low: Option<Decimal>,
    pub trades: u64,
}

impl Stats {
    fn widen(&mut self, high: Decimal, low: Decimal) {
        self.high = Some(self.high.map_or(high, |h| h.max(high)));
        self.low = Some(self.low.map_or(low, |l| l.min(low)));
    }
    pub fn add_trade(&mut self, price: Decimal, quantity: Decimal) {
        self.widen(price, price);
        self.volume = self.volume.saturating_add(quantity);
        self.trades += 1;
    }
    pub fn add_bar(&mut self, bar: &super::candles::Bar) {
        self.widen(bar.high, bar.low);
        self.volume = self.volume.saturating_add(bar.volume);
        self.trades += bar.trades;
    }
}

/// Where a symbol's last price came from, so a late-arriving older trade cannot replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Last {
    price: Decimal,
    ts_us: i64,
    /// The trade's row on the tape; 0 for an imported close.
    row: i64,
}

/// The last price of every symbol that has traded; the trades themselves live in the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tape {
    last: HashMap<String, Last>,
}

const TRADE_COLUMNS: &str = "trade_id, symbol, price, quantity, taker_side, buy_order_id, sell_order_id, timestamp";

impl Tape {
    /// The last prices, from the newest trade of each symbol in the store.
    pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<Tape> {
        // The traded symbols, one index seek each: `SELECT DISTINCT` would read the whole
        // index (85 MB after 2.3 M trades, most of a cold start).
        let symbols: Vec<String> = conn
            .prepare(
                "WITH RECURSIVE traded(symbol) AS (
                    SELECT min(symbol) FROM trades
                    UNION ALL
                    SELECT (SELECT min(symbol) FROM trades WHERE symbol > traded.symbol) FROM traded WHERE traded.symbol IS NOT NULL
                )
                SELECT symbol FROM traded WHERE symbol IS NOT NULL",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut newest = conn.prepare("SELECT price, ts_us, id FROM trades WHERE symbol = ?1 ORDER BY ts_us DESC, id DESC LIMIT 1")?;
        let mut last = HashMap::new();
        for s in symbols {
            let l = newest.query_row([&s], |r| Ok(Last { price: decimal_at(r, 0)?, ts_us: r.get(1)?, row: r.get(2)? }))?;
            last.insert(s, l);
        }
        // Imported history stands for a moment too; it wins only where it is newer.
        let mut imported = conn.prepare("SELECT symbol, price, ts_us FROM imported_last")?;
        let mut rows = imported.query([])?;
        while let Some(r) = rows.next()? {
            let (symbol, l) = (r.get::<_, String>(0)?, Last { price: decimal_at(r, 1)?, ts_us: r.get(2)?, row: 0 });
            if last.get(&symbol).is_none_or(|t: &Last| l.ts_us > t.ts_us) {
                last.insert(symbol, l);
            }
        }
        Ok(Tape { last })
    }

    /// Makes an imported close the last price, if it stands for a moment after the last
    /// trade (a trade at the same instant wins); `true` if it did. Kept in the store, so a
    /// restart agrees.
    pub fn import_last(&mut self, tx: &Connection, symbol: &str, price: Decimal, ts_us: i64) -> rusqlite::Result<bool> {
        let newer = self.last.get(symbol).is_none_or(|l| ts_us > l.ts_us || (ts_us == l.ts_us && l.row == 0));
        if !newer {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO imported_last (symbol, price, ts_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, ts_us = excluded.ts_us",
        )?
        .execute(params![symbol, price.to_string(), ts_us])?;
        self.last.insert(symbol.to_string(), Last { price, ts_us, row: 0 });
        Ok(true)
    }

    pub fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.last.get(symbol).map(|l| l.price)
    }

    /// The symbols whose last price is an imported close, newer than any trade: with
    /// that price and the moment it stands for.
    pub fn imported_lasts(&self) -> Vec<(String, Decimal, i64)> {
        self.last.iter().filter(|(_, l)| l.row == 0).map(|(s, l)| (s.clone(), l.price, l.ts_us)).collect()
    }

    /// Puts a trade on the tape and into its candles, once: `false` if its id was seen
    /// before. `fallback_us` dates a trade whose own timestamp cannot be read.
    pub fn record(&mut self, tx: &Connection, bars: &mut Bars, t: &Trade, fallback_us: i64) -> rusqlite::Result<bool> {
        let ts_us = micros(&t.timestamp).unwrap_or(fallback_us);
        // The statement's text is a constant and the decimals are written without `fmt`:
        // formatting them per trade was ~5 % of the market thread.
        const INSERT: &str = "INSERT OR IGNORE INTO trades
            (trade_id, symbol, price, quantity, taker_side, buy_order_id, sell_order_id, timestamp, ts_us)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        let inserted = tx.prepare_cached(INSERT)?.execute(params![
            t.trade_id,
            t.symbol,
            DecimalText::of(t.price),
            DecimalText::of(t.quantity),
            t.taker_side.as_str(),
            t.buy_order_id,
            t.sell_order_id,
            t.timestamp,
            ts_us
        ])?;
        if inserted == 0 {
            return Ok(false);
        }
        let row = tx.last_insert_rowid();
        let newer = self.last.get(&t.symbol).is_none_or(|l| (ts_us, row) > (l.ts_us, l.row));
        if newer {
            self.last.insert(t.symbol.clone(), Last { price: t.price, ts_us, row });
        }
        bars.record(tx, &t.symbol, &Print { ts_us, price: t.price, quantity: t.quantity }, row)?;
        Ok(true)
    }

    /// The newest `limit` trades of a symbol, newest first.
    pub fn trades(tx: &Connection, symbol: &str, limit: usize) -> rusqlite::Result<Vec<Trade>> {
        let mut stmt =
            tx.prepare_cached(&format!("SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = ?1 ORDER BY ts_us DESC, id DESC LIMIT ?2"))?;
        let rows = stmt.query_map(params![symbol, limit.min(i64::MAX as usize) as i64], row_to_trade)?;
        rows.collect()
    }

    /// Volume, high, low and count of a symbol's trades in the 24 hours up to `now_us`.
    ///
    /// Whole minutes of the window come from the `1m` candles, and only the minute the
    /// window starts in from the trades themselves, so the cost does not grow with the
    /// number of trades.
    pub fn stats_24h(tx: &Connection, symbol: &str, now_us: i64) -> rusqlite::Result<Stats> {
        let from_us = now_us - DAY_US;
        // The first minute boundary at or after the window's start.
        let minute_us = 60 * 1_000_000;
        let edge_us = from_us.div_euclid(minute_us) * minute_us + if from_us.rem_euclid(minute_us) == 0 { 0 } else { minute_us };
        let mut stats = Stats::default();
        let mut stmt =
            tx.prepare_cached("SELECT price, quantity FROM trades WHERE symbol = ?1 AND ts_us >= ?2 AND ts_us < ?3 AND ts_us <= ?4")?;
        let mut rows = stmt.query(params![symbol, from_us, edge_us, now_us])?;
        while let Some(r) = rows.next()? {
            stats.add_trade(decimal_at(r, 0)?, decimal_at(r, 1)?);
        }
        for bar in Bars::since(tx, symbol, Interval::M1, edge_us / 1_000_000)? {
            stats.add_bar(&bar);
        }
        Ok(stats)
    }

    /// Whether a trade with this id is on the tape.
    #[cfg(test)]
    pub fn has(tx: &Connection, trade_id: &str) -> rusqlite::Result<bool> {
        tx.query_row("SELECT count(*) > 0 FROM trades WHERE trade_id = ?1", [trade_id], |r| r.get(0))
    }
}

fn row_to_trade(r: &rusqlite::Row) -> rusqlite::Result<Trade> {
    Ok(Trade {
        trade_id: r.get(0)?,
        symbol: r.get(1)?,
        price: decimal_at(r, 2)?,
        quantity: decimal_at(r, 3)?,
        taker_side: crate::services::store::enum_at(r, 4, Side::parse)?,
        buy_order_id: r.get(5)?,
        sell_order_id: r.get(6)?,
        timestamp: r.get(7)?,
    })
}
