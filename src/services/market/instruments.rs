//! Instruments: what may be traded, on which tick and lot, in which quantities.
//!
//! They come from config `[[symbols]]` (seeded on every start, never over an instrument
//! already in the store, so an operator's own definition wins) and from
//! `agt symbol add` / `POST /api/symbols`.

use super::base_asset;
use super::tape::decimal_at;
use crate::api::quote::quoted;
use crate::api::{ApiError, Instrument, NewInstrument};
use crate::services::config::settings::SymbolSettings;
use rusqlite::{params, Connection};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The quote currency of every instrument.
pub const QUOTE: &str = "USD";

/// `max_quantity` when `POST /api/symbols` leaves it out.
pub fn default_max_quantity() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

/// Checks a new instrument and fills in its defaults.
pub fn validate(new: NewInstrument) -> Result<Instrument, ApiError> {
    let sym = new.symbol;
    if !crate::api::valid_name(&sym) {
        return Err(ApiError::invalid(
            "invalid_symbol",
            format!("symbol must be {}, such as \"AAPL\" or \"BTC-USD\"; got {}", crate::api::NAME_RULE, quoted(&sym)),
        ));
    }
    let base = base_asset(&sym).to_string();
    // `BTC-USD-USD` would trade an asset named like the instrument `BTC-USD`, which no
    // deposit can make (a deposit of an instrument's name is refused).
    if base.ends_with(&format!("-{QUOTE}")) {
        return Err(ApiError::invalid(
            "invalid_symbol",
            format!("symbol {sym:?} would trade {base:?}, an instrument's name, against {QUOTE}; name the base asset, such as \"BTC-USD\""),
        ));
    }
    if base.is_empty() || base == QUOTE {
        return Err(ApiError::invalid(
            "invalid_symbol",
            format!("symbol {sym:?} would trade {QUOTE} against itself; name the base asset, such as \"BTC-USD\" or \"AAPL\""),
        ));
    }
    if new.tick <= Decimal::ZERO {
        return Err(ApiError::invalid("invalid_tick", format!("tick must be a decimal number > 0 such as \"0.01\"; got {}", new.tick)));
    }
    if new.lot <= Decimal::ZERO {
        return Err(ApiError::invalid(
            "invalid_lot",
            format!("lot must be a decimal number > 0 such as \"1\" or \"0.001\"; got {}", new.lot),
        ));
    }
    // A fill's notional (price × quantity) has the tick's and the lot's decimal places
    // together; past 28 it cannot be held exactly (one tick of 1e-14 times one lot of
    // 1e-15 settled as 0 USD).
    let places = new.tick.normalize().scale() + new.lot.normalize().scale();
    if places > 28 {
        return Err(ApiError::invalid(
            "invalid_lot",
            format!(
                "tick {} and lot {} have {places} decimal places together, more than the 28 a notional (price × quantity) can have exactly; use a coarser tick or lot",
                new.tick, new.lot
            ),
        ));
    }
    let min_quantity = new.min_quantity.unwrap_or(new.lot);
    if min_quantity <= Decimal::ZERO {
        return Err(ApiError::invalid(
            "invalid_quantity",
            format!("min_quantity must be a decimal number > 0 (it defaults to the lot); got {min_quantity}"),
        ));
    }
    if !(min_quantity % new.lot).is_zero() {
        return Err(ApiError::invalid(
            "invalid_quantity",
            format!("min_quantity ({min_quantity}) must be a multiple of the lot ({}): no order could be exactly that size", new.lot),
        ));
    }
    // The default, on the lot's grid (a lot of 0.3 cannot make 1000000000).
    let max_quantity = new.max_quantity.unwrap_or_else(|| default_max_quantity() - default_max_quantity() % new.lot);
    if !(max_quantity % new.lot).is_zero() {
        return Err(ApiError::invalid(
            "invalid_quantity",
            format!("max_quantity ({max_quantity}) must be a multiple of the lot ({})", new.lot),
        ));
    }
    if max_quantity < min_quantity {
        return Err(ApiError::invalid(
            "invalid_quantity",
            format!("max_quantity ({max_quantity}) must be at least min_quantity ({min_quantity})"),
        ));
    }
    Ok(Instrument {
        symbol: sym,
        base,
        quote: QUOTE.into(),
        tick: new.tick.normalize(),
        lot: new.lot.normalize(),
        min_quantity: min_quantity.normalize(),
        max_quantity: max_quantity.normalize(),
    })
}

/// Every instrument, by symbol; the store is the source and this the copy reads use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Instruments {
    by_symbol: BTreeMap<String, Instrument>,
}

impl Instruments {
    pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<Instruments> {
        let mut stmt = conn.prepare("SELECT symbol, base, quote, tick, lot, min_quantity, max_quantity FROM instruments")?;
        let by_symbol = stmt
            .query_map([], |r| {
                Ok(Instrument {
                    symbol: r.get(0)?,
                    base: r.get(1)?,
                    quote: r.get(2)?,
                    tick: decimal_at(r, 3)?,
                    lot: decimal_at(r, 4)?,
                    min_quantity: decimal_at(r, 5)?,
                    max_quantity: decimal_at(r, 6)?,
                })
            })?
            .map(|i| i.map(|i| (i.symbol.clone(), i)))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Instruments { by_symbol })
    }

    /// Adds the config's instruments the store does not have yet.
    pub fn seed(&mut self, tx: &Connection, symbols: &[SymbolSettings]) -> rusqlite::Result<()> {
        for s in symbols {
            if let Some(i) = self.by_symbol.get(&s.symbol) {
                // An instrument's terms never change once it exists: say so where the file
                // asks for others, instead of leaving them for the operator to find.
                let differences = s.differences(i);
                if !differences.is_empty() {
                    tracing::warn!(
                        symbol = %s.symbol,
                        differences = %differences.join("; "),
                        "a [[symbols]] entry asks for other terms than the instrument has; it keeps its own (`GET /api/config/pending` lists such entries)"
                    );
                }
                continue;
            }
            let new = NewInstrument {
                symbol: s.symbol.clone(),
                tick: s.tick,
                lot: s.lot,
                min_quantity: Some(s.min_quantity),
                max_quantity: Some(s.max_quantity),
            };
            match validate(new) {
                Ok(i) => self.insert(tx, i, "config")?,
                // The config service validates [[symbols]] with the same rules; this is a guard.
                Err(e) => tracing::warn!(symbol = %s.symbol, error = %e, "skipping an invalid [[symbols]] entry"),
            }
        }
        Ok(())
    }

    /// `POST /api/symbols`: 400 if invalid, 409 `symbol_exists` if taken.
    pub fn add(&mut self, tx: &Connection, new: NewInstrument) -> rusqlite::Result<Result<Instrument, ApiError>> {
        let inst = match validate(new) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        if self.by_symbol.contains_key(&inst.symbol) {
            return Ok(Err(ApiError::conflict("symbol_exists", format!("symbol {:?} already exists", inst.symbol))));
        }
        self.insert(tx, inst.clone(), "api")?;
        Ok(Ok(inst))
    }

    fn insert(&mut self, tx: &Connection, i: Instrument, source: &str) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO instruments (symbol, base, quote, tick, lot, min_quantity, max_quantity, source, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            i.symbol,
            i.base,
            i.quote,
            i.tick.to_string(),
            i.lot.to_string(),
            i.min_quantity.to_string(),
            i.max_quantity.to_string(),
            source,
            crate::api::now_rfc3339()
        ])?;
        self.by_symbol.insert(i.symbol.clone(), i);
        Ok(())
    }

    pub fn get(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol.get(symbol)
    }

    /// The instrument, or 404 `unknown_symbol`.
    pub fn require(&self, symbol: &str) -> Result<&Instrument, ApiError> {
        self.get(symbol)
            .ok_or_else(|| ApiError::new(404, "unknown_symbol", format!("no symbol {}; `agt symbol list` shows them", quoted(symbol))))
    }

    /// Every instrument, by symbol.
    pub fn list(&self) -> Vec<Instrument> {
        self.by_symbol.values().cloned().collect()
    }
}
