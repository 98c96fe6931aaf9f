//! The pre-trade checks (DESIGN.md §2), as plain functions of what the risk service knows.
//!
//! [`admit`] runs them in the contract's order and answers the hold an order needs, or the
//! first rejection: a 422 whose code names the check and whose message says which limit
//! was hit and by how much. The only state a check changes is the caller's rate window,
//! and only once the order has got that far.

use super::ReserveRequest;
use crate::api::decimal::exact_mul;
use crate::api::{ApiError, OrderType, RiskLimits, Side};
use crate::services::config::settings::RiskSettings;
use rust_decimal::Decimal;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The quote asset every instrument trades against.
pub const QUOTE: &str = "USD";

/// The limits that apply to one user: its own overrides over the global `risk.*` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub max_open_orders: u32,
    pub max_order_quantity: Decimal,
    pub max_order_notional: Decimal,
    pub max_orders_per_second: u32,
    pub price_band_pct: Decimal,
    pub allow_short: bool,
}

impl Effective {
    pub fn new(global: &RiskSettings, user: Option<&RiskLimits>) -> Effective {
        let u = user.cloned().unwrap_or_default();
        Effective {
            max_open_orders: u.max_open_orders.unwrap_or(global.max_open_orders),
            max_order_quantity: u.max_order_quantity.unwrap_or(global.max_order_quantity),
            max_order_notional: u.max_order_notional.unwrap_or(global.max_order_notional),
            max_orders_per_second: u.max_orders_per_second.unwrap_or(global.max_orders_per_second),
            price_band_pct: u.price_band_pct.unwrap_or(global.price_band_pct),
            allow_short: u.allow_short.unwrap_or(global.allow_short),
        }
    }

    /// As the API shows limits: every field present.
    pub fn to_limits(&self) -> RiskLimits {
        RiskLimits {
            max_open_orders: Some(self.max_open_orders),
            max_order_quantity: Some(self.max_order_quantity),
            max_order_notional: Some(self.max_order_notional),
            max_orders_per_second: Some(self.max_orders_per_second),
            price_band_pct: Some(self.price_band_pct),
            allow_short: Some(self.allow_short),
        }
    }
}

/// The ranges a limit may take, the same as config `risk.*` allows, so a per-user limit
/// cannot be set to something the global one refuses.
pub fn validate_limits(l: &RiskLimits) -> Result<(), ApiError> {
    let bad = |key: &str, what: &str| Err(ApiError::invalid("invalid_limit", format!("{key} must be {what}")));
    if l.max_open_orders == Some(0) {
        return bad("max_open_orders", "a whole number >= 1");
    }
    if l.max_orders_per_second == Some(0) {
        return bad("max_orders_per_second", "a whole number >= 1");
    }
    if l.max_order_quantity.is_some_and(|d| d <= Decimal::ZERO) {
        return bad("max_order_quantity", "a decimal > 0");
    }
    if l.max_order_notional.is_some_and(|d| d <= Decimal::ZERO) {
        return bad("max_order_notional", "a decimal > 0");
    }
    if l.price_band_pct.is_some_and(|d| d <= Decimal::ZERO || d > Decimal::from(1000)) {
        return bad("price_band_pct", "a decimal > 0 and <= 1000 (percent)");
    }
    Ok(())
}

/// The names a limit has on the wire (and, under `risk.`, in the config).
pub const LIMIT_KEYS: &[&str] =
    &["max_open_orders", "max_order_quantity", "max_order_notional", "max_orders_per_second", "price_band_pct", "allow_short"];

pub use crate::api::valid_name;

pub fn validate_asset(asset: &str) -> Result<(), ApiError> {
    if valid_name(asset) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_asset",
            format!("asset must be {} (such as \"USD\" or \"AAPL\"), got {}", crate::api::NAME_RULE, crate::api::quote::quoted(asset)),
        ))
    }
}

/// A deposit or withdrawal amount: a decimal greater than zero.
pub fn validate_amount(amount: Decimal) -> Result<(), ApiError> {
    if amount > Decimal::ZERO {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid_amount", format!("amount must be greater than zero, got {amount}")))
    }
}

/// Placements of one user in the last second (the `rate_limited` check).
#[derive(Debug, Default, Clone)]
pub struct RateWindow(VecDeque<Instant>);

impl RateWindow {
    /// Admits one more placement at `now` unless `limit` were already admitted in the
    /// second before it.
    pub fn admit(&mut self, now: Instant, limit: u32) -> Result<(), ApiError> {
        while self.0.front().is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1)) {
            self.0.pop_front();
        }
        if self.0.len() >= limit as usize {
            return Err(ApiError::new(
                429,
                "rate_limited",
                format!("more than max_orders_per_second = {limit} orders in the last second; wait a moment and retry"),
            ));
        }
        self.0.push_back(now);
        Ok(())
    }
    pub fn is_idle(&self, now: Instant) -> bool {
        self.0.back().is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
    }
}

/// The most decimal places a trade of `inst` moves its assets by: (base, USD). A fill's
/// quantity is on the lot, its notional on tick × lot. The risk ledger keeps each asset's
/// supply within 28 digits at these places (`Ledger::room`), so that settling never rounds.
pub fn grid_places(inst: &crate::api::Instrument) -> (u32, u32) {
    let lot = inst.lot.normalize().scale();
    (lot, lot + inst.tick.normalize().scale())
}

/// The most decimal places a trade moves `asset` by over `instruments` (0 with none): a
/// lot's where it is the base, a notional's where it is the quote. What a deposit must
/// leave room for, and a reserve or an amend as well as its own order's grid. An
/// instrument whose notional needs more than 28 places (listed before agt refused such)
/// takes no order at all, so it counts for nothing.
pub fn finest_grid<'a>(instruments: impl IntoIterator<Item = &'a crate::api::Instrument>, asset: &str) -> u32 {
    let grids = instruments.into_iter().filter(|i| i.base == asset || i.quote == asset).map(|i| (i.base == asset, grid_places(i)));
    grids.filter(|(_, (_, notional))| *notional <= 28).map(|(base, (lot, notional))| if base { lot } else { notional }).max().unwrap_or(0)
}

/// What the checks need to know about the user and the market, read by the caller.
pub struct Context<'a> {
    pub limits: &'a Effective,
    /// Trading is halted everywhere.
    pub halted: bool,
    /// Trading is halted in this order's symbol.
    pub symbol_halted: bool,
    /// The user's open holds (one per open order).
    pub open_orders: u32,
    /// The symbol's last trade price, once it has traded.
    pub last_price: Option<Decimal>,
    /// Available USD.
    pub available_quote: Decimal,
    /// Available base asset.
    pub available_base: Decimal,
    pub rate: &'a mut RateWindow,
    pub now: Instant,
}

/// The hold an admitted order takes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// USD for a buy, the base asset for a sell.
    pub asset: String,
    pub amount: Decimal,
    /// A limit buy's price: its fills shrink the hold by quantity × this price.
    pub limit: Option<Decimal>,
    /// A market buy's budget: all the USD it holds.
    pub budget: Option<Decimal>,
    /// A short sale's part beyond what it holds (`risk.allow_short`): what its fills may
    /// take the seller's balance below zero by, and so add to others' long balances past
    /// the asset's supply (`Ledger::room` counts it). Absent from journal records of
    /// orders that sell nothing short, and of an older agt's.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub short: Decimal,
}

/// Runs every pre-trade check in order and answers the hold, or the first rejection.
pub fn admit(req: &ReserveRequest, cx: Context) -> Result<Plan, ApiError> {
    let inst = &req.instrument;
    let symbol = inst.symbol.as_str();
    let qty = req.quantity;
    let limits = cx.limits;
    check_active(req.user_active, &req.user_id)?;
    check_halts(cx.halted, cx.symbol_halted, symbol)?;
    let limit = match (req.kind, req.price) {
        (OrderType::Limit, Some(p)) => Some(p),
        (OrderType::Limit, None) => return Err(ApiError::invalid("invalid_price", "a limit order needs a price")),
        (OrderType::Market, _) => None,
    };
    if let Some(p) = limit {
        check_tick(p, inst.tick)?;
    }
    check_lot(qty, inst.lot, inst.min_quantity)?;
    check_quantity(qty, limits.max_order_quantity, inst.max_quantity)?;
    // A market order's notional is estimated at the last price; unknown before any trade.
    if let Some(p) = limit.or(cx.last_price) {
        check_notional(p, qty, limits.max_order_notional, limit.is_none())?;
    }
    if cx.open_orders >= limits.max_open_orders {
        return Err(ApiError::rejected(
            "max_open_orders",
            format!(
                "user {} already has {} open orders, the limit max_open_orders is {}; cancel one first",
                req.user_id, cx.open_orders, limits.max_open_orders
            ),
        ));
    }
    cx.rate.admit(cx.now, limits.max_orders_per_second)?;
    if let (Some(p), Some(last)) = (limit, cx.last_price) {
        check_band(p, last, limits.price_band_pct, inst.tick, symbol)?;
    }
    match req.side {
        Side::Buy => match limit {
            Some(p) => {
                let need = exact_mul(p, qty).ok_or_else(|| too_large(p, qty))?;
                if need > cx.available_quote {
                    return Err(ApiError::rejected(
                        "insufficient_funds",
                        format!(
                            "buying {qty} at {p} needs {} {QUOTE}, but only {} is available (short by {})",
                            need.normalize(),
                            cx.available_quote.normalize(),
                            (need - cx.available_quote).normalize()
                        ),
                    ));
                }
                Ok(Plan { asset: QUOTE.into(), amount: need, limit: Some(p), budget: None, short: Decimal::ZERO })
            }
            None => {
                if cx.available_quote <= Decimal::ZERO {
                    return Err(ApiError::rejected(
                        "insufficient_funds",
                        format!("a market buy needs available {QUOTE}, and there is none; deposit some first"),
                    ));
                }
                // It spends at most max_order_notional: the notional check above only
                // estimated it at the last price (or skipped it, before any trade), and
                // the book may be far above that. What it cannot buy within the budget
                // goes unfilled, as any market order's rest does.
                let budget = cx.available_quote.min(limits.max_order_notional);
                Ok(Plan { asset: QUOTE.into(), amount: budget, limit: None, budget: Some(budget), short: Decimal::ZERO })
            }
        },
        Side::Sell => {
            let base = crate::services::market::base_asset(symbol).to_string();
            let held = if qty > cx.available_base {
                if !limits.allow_short {
                    return Err(ApiError::rejected(
                        "insufficient_position",
                        format!(
                            "selling {qty} {base} needs {qty} available, but only {} is (short by {}); short selling is off (risk.allow_short)",
                            cx.available_base.normalize(),
                            (qty - cx.available_base.max(Decimal::ZERO)).normalize()
                        ),
                    ));
                }
                // Short selling: hold what there is, the rest is sold short.
                cx.available_base.max(Decimal::ZERO)
            } else {
                qty
            };
            Ok(Plan { asset: base, amount: held, limit: None, budget: None, short: qty - held })
        }
    }
}

fn too_large(p: Decimal, q: Decimal) -> ApiError {
    ApiError::rejected("max_order_notional", format!("price {p} × quantity {q} does not fit in 28 significant digits"))
}

/// `trading_halted` if trading is halted everywhere or in `symbol`.
fn check_halts(halted: bool, symbol_halted: bool, symbol: &str) -> Result<(), ApiError> {
    if halted {
        return Err(ApiError::rejected("trading_halted", "trading is halted everywhere; an admin resumes it with `agt risk resume`"));
    }
    if symbol_halted {
        return Err(ApiError::rejected(
            "trading_halted",
            format!("trading in {symbol} is halted; an admin resumes it with `agt risk resume {symbol}`"),
        ));
    }
    Ok(())
}

/// The checks an amend runs on an open limit order's new price and total quantity: those
/// of a placement that its new terms could fail (halts, the quantity and notional limits,
/// and the price band when the price changes: an order resting at a price the market has
/// since moved away from may still change its size). Tick, lot and funds are checked by
/// the lane and the ledger.
pub fn admit_amend(
    symbol: &str,
    price: Decimal,
    quantity: Decimal,
    price_changed: bool,
    (tick, instrument_max): (Decimal, Decimal),
    cx: &AmendContext,
) -> Result<(), ApiError> {
    check_active(cx.user_active, cx.user_id)?;
    check_halts(cx.halted, cx.symbol_halted, symbol)?;
    check_quantity(quantity, cx.limits.max_order_quantity, instrument_max)?;
    check_notional(price, quantity, cx.limits.max_order_notional, false)?;
    if let (Some(last), true) = (cx.last_price, price_changed) {
        check_band(price, last, cx.limits.price_band_pct, tick, symbol)?;
    }
    Ok(())
}

/// A disabled user may not trade: neither place nor amend (cancelling is still allowed).
fn check_active(active: bool, user_id: &str) -> Result<(), ApiError> {
    if active {
        return Ok(());
    }
    Err(ApiError::rejected(
        "user_disabled",
        format!("user {user_id} is disabled: an admin enables it again with `agt user enable {user_id}`"),
    ))
}

/// What [`admit_amend`] needs of risk's state, and the order's user.
pub struct AmendContext<'a> {
    pub user_id: &'a str,
    /// False for a disabled user (`user_disabled`).
    pub user_active: bool,
    pub limits: &'a Effective,
    pub halted: bool,
    pub symbol_halted: bool,
    pub last_price: Option<Decimal>,
}

/// A limit price must be a positive multiple of the instrument's tick. The refusal names
/// the prices on the tick either side, so that the user can pick one: only the one above
/// when the one below is 0 (`0.001` on a 0.01 tick), which is no price at all.
pub fn check_tick(price: Decimal, tick: Decimal) -> Result<(), ApiError> {
    if price <= Decimal::ZERO {
        return Err(ApiError::rejected("invalid_tick", format!("price must be greater than zero, got {price}")));
    }
    if tick > Decimal::ZERO && !(price % tick).is_zero() {
        return Err(ApiError::rejected(
            "invalid_tick",
            format!("price {price} is not a multiple of the tick {tick} ({})", nearest_on_grid(price, tick)),
        ));
    }
    Ok(())
}

/// The multiples of `step` either side of `value` (positive, off the grid), as a hint:
/// "nearest on the tick: 100 or 100.05", or only the one above when the one below is 0.
fn nearest_on_grid(value: Decimal, step: Decimal) -> String {
    let below = value - value % step;
    let above = below + step;
    if below.is_zero() {
        format!("the smallest on it is {}", above.normalize())
    } else {
        format!("nearest on it: {} or {}", below.normalize(), above.normalize())
    }
}

/// A quantity must be a positive multiple of the lot, and at least the minimum.
pub fn check_lot(qty: Decimal, lot: Decimal, min_quantity: Decimal) -> Result<(), ApiError> {
    if qty <= Decimal::ZERO {
        return Err(ApiError::rejected("invalid_lot", format!("quantity must be greater than zero, got {qty}")));
    }
    if lot > Decimal::ZERO && !(qty % lot).is_zero() {
        return Err(ApiError::rejected(
            "invalid_lot",
            format!("quantity {qty} is not a multiple of the lot {lot} ({})", nearest_on_grid(qty, lot)),
        ));
    }
    if qty < min_quantity {
        return Err(ApiError::rejected(
            "invalid_lot",
            format!("quantity {qty} is below the minimum {min_quantity} (by {})", min_quantity - qty),
        ));
    }
    Ok(())
}

pub fn check_quantity(qty: Decimal, user_max: Decimal, instrument_max: Decimal) -> Result<(), ApiError> {
    if qty > user_max {
        return Err(ApiError::rejected(
            "max_order_quantity",
            format!("quantity {qty} is above max_order_quantity = {user_max} (by {})", qty - user_max),
        ));
    }
    if instrument_max > Decimal::ZERO && qty > instrument_max {
        return Err(ApiError::rejected(
            "max_order_quantity",
            format!("quantity {qty} is above the instrument's max_quantity {instrument_max} (by {})", qty - instrument_max),
        ));
    }
    Ok(())
}

/// Price × quantity against `max_order_notional`; `estimated` when the price is the last
/// trade price (a market order).
pub fn check_notional(price: Decimal, qty: Decimal, max: Decimal, estimated: bool) -> Result<(), ApiError> {
    let notional = exact_mul(price, qty).ok_or_else(|| too_large(price, qty))?;
    if notional > max {
        let at = if estimated { format!("about {notional} at the last price {price}") } else { notional.to_string() };
        return Err(ApiError::rejected(
            "max_order_notional",
            format!("the order's notional ({at} {QUOTE}) is above max_order_notional = {max} (by {})", notional - max),
        ));
    }
    Ok(())
}

/// A limit price at most `pct` percent away from the last trade price. A refusal names
/// the band as the prices on the instrument's `tick` one could send instead: its ends
/// rounded inward ("171 to 208.98", not "170.991 to 208.989").
pub fn check_band(price: Decimal, last: Decimal, pct: Decimal, tick: Decimal, symbol: &str) -> Result<(), ApiError> {
    if last <= Decimal::ZERO {
        return Ok(());
    }
    // A distance too large for a decimal (a huge price against a tiny last one) is
    // outside any band: checked, so that it is a rejection and not a panic.
    let away = (price - last).abs().checked_div(last).and_then(|r| r.checked_mul(Decimal::ONE_HUNDRED));
    if away.is_none_or(|away| away > pct) {
        let band = last.checked_mul(pct).map(|x| x / Decimal::ONE_HUNDRED).unwrap_or(Decimal::MAX);
        let (lo, hi) = (last.saturating_sub(band).max(Decimal::ZERO), last.saturating_add(band));
        let away = away.map_or_else(|| "too far".to_string(), |a| format!("{}%", a.round_dp(4).normalize()));
        let allows = match inward_to_tick(lo, hi, tick) {
            Some((lo, hi)) => format!("allows {} to {}", lo.normalize(), hi.normalize()),
            None => format!("allows {} to {}, which holds no price on the tick {tick}", lo.normalize(), hi.normalize()),
        };
        return Err(ApiError::rejected(
            "price_band",
            format!("price {price} is {away} away from {symbol}'s last price {last}; price_band_pct = {pct} {allows}"),
        ));
    }
    Ok(())
}

/// The prices on `tick` from `lo` to `hi`: `lo` rounded up and `hi` down to multiples of
/// the tick, and never below one tick (a price is above zero). `None` when no multiple
/// lies between them; the ends as they are where the tick is unset or the division would
/// overflow.
fn inward_to_tick(lo: Decimal, hi: Decimal, tick: Decimal) -> Option<(Decimal, Decimal)> {
    if tick <= Decimal::ZERO {
        return Some((lo, hi));
    }
    let up = lo.checked_div(tick).and_then(|n| n.ceil().checked_mul(tick)).unwrap_or(lo).max(tick);
    let down = hi.checked_div(tick).and_then(|n| n.floor().checked_mul(tick)).unwrap_or(hi);
    (up <= down).then_some((up, down))
}
