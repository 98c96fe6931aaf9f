//! The market actor: its store, its state and how it answers each [`Cmd`].

use super::candles::{Bar, Bars, Interval, Span};
use super::import::{self, CsvRow};
use super::instruments::Instruments;
use super::tape::{now_us, Tape};
use super::{Cmd, Imported};
use crate::api::{ApiError, Instrument, NewInstrument, Quote, Trade};
use crate::services::actor::{AfterCommit, Service, ServiceCtx, ServiceError};
use crate::services::bus::BusEvent;
use crate::services::config::settings::SymbolSettings;
use rusqlite::Connection;

pub struct Market {
    instruments: Instruments,
    tape: Tape,
    bars: Bars,
    /// The last bus event applied; the follower resumes after it and anything at or below
    /// it is ignored, so a replay neither loses nor doubles a trade.
    last_event_seq: u64,
    /// `last_event_seq` moved by the batch's trades or a `Passed`, until `before_commit`
    /// stores it (once per batch, like the bars, instead of once per trade).
    unsaved_seq: bool,
    /// The instruments' read model (`ServiceCtx::instruments`), kept in step after each
    /// commit that adds one.
    listed: super::Listed,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE instruments (
        symbol TEXT PRIMARY KEY,
        base TEXT NOT NULL,
        quote TEXT NOT NULL,
        tick TEXT NOT NULL,
        lot TEXT NOT NULL,
        min_quantity TEXT NOT NULL,
        max_quantity TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE trades (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_id TEXT NOT NULL UNIQUE,
        symbol TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        taker_side TEXT NOT NULL,
        buy_order_id TEXT NOT NULL,
        sell_order_id TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        ts_us INTEGER NOT NULL
    );
    CREATE INDEX trades_by_time ON trades(symbol, ts_us, id);
    CREATE TABLE candles (
        symbol TEXT NOT NULL,
        interval TEXT NOT NULL,
        open_time INTEGER NOT NULL,
        open TEXT NOT NULL,
        high TEXT NOT NULL,
        low TEXT NOT NULL,
        close TEXT NOT NULL,
        volume TEXT NOT NULL,
        trades INTEGER NOT NULL,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        PRIMARY KEY (symbol, interval, open_time)
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_event_seq', 0);",
    // The last price an import set, and the moment it stands for (`import::as_of_us`).
    "CREATE TABLE imported_last (symbol TEXT PRIMARY KEY, price TEXT NOT NULL, ts_us INTEGER NOT NULL);",
    // The tape row up to which the stored candles include trades (`candles::Bars`): until
    // now every batch wrote its bars, so they include every trade on the tape.
    "INSERT INTO meta VALUES ('candles_through', (SELECT coalesce(max(id), 0) FROM trades));",
];

impl Market {
    /// Rebuilds the state from the store, after adding the config's new instruments.
    pub(super) fn open(conn: &rusqlite::Connection, seeds: &[SymbolSettings]) -> Result<Market, ServiceError> {
        let mut instruments = Instruments::load(conn)?;
        let tx = conn.unchecked_transaction()?;
        instruments.seed(&tx, seeds)?;
        tx.commit()?;
        let last: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'last_event_seq'", [], |r| r.get(0))?;
        Ok(Market {
            instruments,
            tape: Tape::load(conn)?,
            bars: Bars::load(conn)?,
            last_event_seq: last as u64,
            unsaved_seq: false,
            listed: super::Listed::default(),
        })
    }

    pub(super) fn add_symbol(&mut self, tx: &Connection, new: NewInstrument) -> Result<Result<Instrument, ApiError>, ServiceError> {
        Ok(self.instruments.add(tx, new)?)
    }

    pub(super) fn symbol(&self, symbol: &str) -> Result<Instrument, ApiError> {
        self.instruments.require(symbol).cloned()
    }

    /// Applies one bus event: a `TRADE_EXECUTED` goes on the tape and into the candles;
    /// every event, applied or not, moves `last_event_seq`.
    pub(super) fn apply(&mut self, tx: &Connection, e: &BusEvent) -> Result<(), ServiceError> {
        if e.seq <= self.last_event_seq {
            return Ok(());
        }
        if e.kind == "TRADE_EXECUTED" {
            match serde_json::from_str::<Trade>(e.data_text()) {
                Ok(trade) => {
                    let fallback = super::tape::micros(&e.timestamp).unwrap_or_else(now_us);
                    self.tape.record(tx, &mut self.bars, &trade, fallback)?;
                }
                // A malformed event must not stop the tape (a restart would replay it forever).
                Err(err) => tracing::warn!(seq = e.seq, error = %err, "TRADE_EXECUTED without a readable trade; skipped"),
            }
            // Stored with the trades it follows (at the batch's commit). Other events
            // change nothing here: the follower's `Passed` moves the stored position past
            // them, and a restart that replays them from the last trade on loses nothing.
            self.unsaved_seq = true;
        }
        self.last_event_seq = e.seq;
        Ok(())
    }

    /// The follower has handed over every trade up to `seq`.
    pub(super) fn passed(&mut self, seq: u64) {
        if seq > self.last_event_seq {
            self.last_event_seq = seq;
            self.unsaved_seq = true;
        }
    }

    pub(super) fn trades(&self, tx: &Connection, symbol: &str, limit: usize) -> Result<Result<Vec<Trade>, ApiError>, ServiceError> {
        if let Err(e) = self.instruments.require(symbol) {
            return Ok(Err(e));
        }
        Ok(Ok(Tape::trades(tx, symbol, limit)?))
    }

    /// The quote as of `now_us`; best bid and ask are the book's, left for the route.
    pub(super) fn quote(&mut self, tx: &Connection, symbol: &str, now_us: i64) -> Result<Result<Quote, ApiError>, ServiceError> {
        if let Err(e) = self.instruments.require(symbol) {
            return Ok(Err(e));
        }
        self.bars.flush(tx)?; // the 24 hours' figures come from the 1m bars
        let stats = Tape::stats_24h(tx, symbol, now_us)?;
        let timestamp = chrono::DateTime::from_timestamp_micros(now_us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(crate::api::now_rfc3339);
        Ok(Ok(Quote {
            symbol: symbol.to_string(),
            last: self.tape.last_price(symbol),
            best_bid: None,
            best_ask: None,
            volume_24h: stats.volume,
            high_24h: stats.high,
            low_24h: stats.low,
            trades_24h: stats.trades,
            timestamp,
        }))
    }

    pub(super) fn candles(
        &mut self,
        tx: &Connection,
        symbol: &str,
        interval: &str,
        span: Span,
    ) -> Result<Result<Vec<crate::api::Candle>, ApiError>, ServiceError> {
        let Some(iv) = Interval::parse(interval) else {
            return Ok(Err(ApiError::invalid(
                "invalid_interval",
                format!("interval must be one of {}; got {}", Interval::allowed(), crate::api::quote::quoted(interval)),
            )));
        };
        if let Err(e) = self.instruments.require(symbol) {
            return Ok(Err(e));
        }
        self.bars.flush(tx)?;
        Ok(Ok(Bars::list(tx, symbol, iv, span)?.iter().map(|b| b.to_candle(symbol, iv)).collect()))
    }

    /// Checks every row, then writes every bar or none (see [`Cmd::Import`]). `now_us`
    /// dates the close of a bar that has not ended yet.
    pub(super) fn import(&mut self, tx: &Connection, rows: Vec<CsvRow>, now_us: i64) -> Result<Result<Imported, ApiError>, ServiceError> {
        let bars = match import::check(rows, |s| self.instruments.get(s).map(|i| i.tick)) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        // An imported bar replaces the stored one whole: the trades in memory go in first,
        // so that a reload adds none of them again on top of it.
        self.bars.flush(tx)?;
        // Per symbol, the newest bar: the one whose close stands for the latest moment
        // (a tie goes to the later line of the file).
        let mut newest: std::collections::BTreeMap<String, (i64, usize, rust_decimal::Decimal)> = Default::default();
        for (line, b) in &bars {
            let at = import::as_of_us(b, now_us);
            self.bars.put(tx, &b.symbol, b.interval, &Bar::imported(b, at))?;
            let e = newest.entry(b.symbol.clone()).or_insert((at, *line, b.close));
            if (at, *line) >= (e.0, e.1) {
                *e = (at, *line, b.close);
            }
        }
        let mut out = Imported { imported: bars.len(), ..Default::default() };
        for (symbol, (at, _, close)) in newest {
            if self.tape.import_last(tx, &symbol, close, at)? {
                out.last_price_updated.push(symbol.clone());
                out.new_last_prices.push((symbol.clone(), close, at));
            }
            out.symbols.push(symbol.clone());
            out.last.insert(symbol, close);
        }
        Ok(Ok(out))
    }

    /// Keeps changed bars in memory for `every` instead of [`super::candles::FLUSH_EVERY`].
    #[cfg(test)]
    pub(super) fn hold_bars_for(&mut self, every: std::time::Duration) {
        self.bars.set_flush_every(every);
    }

    #[cfg(test)]
    pub(super) fn last_event_seq(&self) -> u64 {
        self.last_event_seq
    }

    /// What a reload must reproduce: instruments, last prices and the event position.
    #[cfg(test)]
    pub(super) fn same_state(&self, other: &Market) -> bool {
        self.instruments == other.instruments && self.tape == other.tape && self.last_event_seq == other.last_event_seq
    }
}

impl Service for Market {
    type Cmd = Cmd;
    const NAME: &'static str = "market";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    /// It follows the bus: nobody's answer waits for it (reads of it do, under load).
    fn background(_durability: crate::services::store::Durability) -> bool {
        true
    }

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let mut market = Market::open(conn, &ctx.settings.get().symbols)?;
        // The seeding has committed: what the read model shows is in the store.
        market.listed = ctx.instruments.clone();
        market.listed.replace_all(market.instruments.list());
        Ok(market)
    }

    /// The batch's position on the bus, and the bars its trades changed every 250 ms
    /// (see [`Bars`]: a reload rebuilds the rest from the tape).
    fn before_commit(&mut self, tx: &rusqlite::Connection) -> Result<(), ServiceError> {
        if std::mem::take(&mut self.unsaved_seq) {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_event_seq'")?.execute([self.last_event_seq as i64])?;
        }
        Ok(self.bars.flush_if_due(tx)?)
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::AddSymbol(new, reply) => {
                let r = self.add_symbol(tx, new)?;
                if let Ok(added) = &r {
                    let (listed, added) = (self.listed.clone(), added.clone());
                    after.then(move || listed.put(added));
                }
                after.reply(reply, r);
            }
            Cmd::Symbols(reply) => after.reply(reply, Ok(self.instruments.list())),
            Cmd::Symbol(s, reply) => after.reply(reply, self.symbol(&s)),
            Cmd::Event(handed) => {
                if handed.is_next(self.last_event_seq) {
                    self.apply(tx, &handed.event)?
                }
            }
            Cmd::LastEventSeq(reply) => after.reply(reply, Ok(self.last_event_seq)),
            Cmd::ImportedLast(reply) => after.reply(reply, Ok(self.tape.imported_lasts())),
            Cmd::Passed(passed) => {
                if passed.is_next(self.last_event_seq) {
                    self.passed(passed.seq)
                }
            }
            Cmd::Trades { symbol, limit, reply } => {
                let r = self.trades(tx, &symbol, limit)?;
                after.reply(reply, r);
            }
            Cmd::Quote { symbol, reply } => {
                let r = self.quote(tx, &symbol, now_us())?;
                after.reply(reply, r);
            }
            Cmd::Candles { symbol, interval, span, reply } => {
                let r = self.candles(tx, &symbol, &interval, span)?;
                after.reply(reply, r);
            }
            Cmd::Import { rows, reply } => {
                let r = self.import(tx, rows, now_us())?;
                after.reply(reply, r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) const TEST_MIGRATIONS: &[&str] = MIGRATIONS;
