//! Wire types shared by the daemon and its clients (DESIGN.md §4).
//!
//! **API Boundary:** these are plain serde structs with no tokio and no SQLite in them.
//! The daemon answers with them and the CLI and TUI read them, so the two cannot drift.
//! Decimals are written as strings and read from a number or a string ([`decimal`]).

pub mod decimal;
mod error;
pub mod json;
pub mod quote;
pub mod switch;

pub use error::{ApiError, ErrorBody, ErrorDetail};

/// The header of an answer read while the event bus or the feed of the service that
/// answers (audit, market, notify) was still behind after the daemon's wait: how many
/// events, at least, published before the read it may not show. Here, with the wire
/// types, because the daemon writes it and the CLI and TUI read it; a client that must
/// see its own writes asks again.
pub const BEHIND_HEADER: &str = "x-agt-behind";

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The current time as the API writes it: RFC 3339 in UTC with microseconds.
/// `t` as JSON text at its exact size. It is written into a per-thread buffer and copied
/// out once: `serde_json::to_vec` starts at 128 bytes and doubles, and an order's event
/// (~300–450 bytes) or a placement's answer (~600) took two or three reallocations and
/// their copies. A buffer grown by a large document (a page of thousands of orders) is not
/// kept for the thread's life.
pub fn to_json_exact<T: Serialize + ?Sized>(t: &T) -> serde_json::Result<Vec<u8>> {
    const KEPT: usize = 64 << 10;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        let out = json::write(&mut buf, t).map(|()| buf.to_vec());
        if buf.capacity() > KEPT {
            *buf = Vec::new();
        }
        out
    })
}

pub fn now_rfc3339() -> String {
    rfc3339_micros(std::time::SystemTime::now())
}

/// `t` as chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` writes it
/// (`2026-12-05T07:40:34.123456Z`), with the civil date worked out directly (Howard
/// Hinnant's `civil_from_days`): chrono's formatting machinery took ~550 instructions a
/// call, and every order's path stamps several (its batch, its audit records, the
/// command record of its request). Outside years 1970–9999, chrono writes it.
pub fn rfc3339_micros(t: std::time::SystemTime) -> String {
    let chrono = || chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let Ok(since) = t.duration_since(std::time::UNIX_EPOCH) else { return chrono() };
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return chrono();
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, u64::from(micros));
    String::from_utf8(out.to_vec()).expect("ASCII digits")
}

// ---------------------------------------------------------------- daemon

/// `$AGT_HOME/agtd.json`: how clients find a running daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub socket: String,
    /// The bound TCP address (`127.0.0.1:8000`), or null when TCP is off.
    pub http: Option<String>,
    pub version: String,
    /// The commit the daemon was built from (`daemon::BUILD`); absent in the file of an
    /// agt from before it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    pub started_at: String,
    /// When the daemon took its stop signal (RFC 3339); absent while it serves. It then
    /// answers the requests it has, closes its listeners and exits: a client that finds
    /// its socket refusing or gone meanwhile is told it is stopping, not broken (the
    /// advice to restart it was wrong then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_since: Option<String>,
}

/// `GET /health`, in the seed's shape plus the state of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub service: String,
    /// `healthy` when every service runs, else `degraded`.
    pub status: String,
    pub timestamp: String,
    pub version: String,
    /// The commit the daemon was built from (`daemon::BUILD`); empty from an agt that did
    /// not say.
    #[serde(default)]
    pub build: String,
    pub uptime_s: u64,
    pub services: BTreeMap<String, String>,
}

/// One row of `GET /api/services`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    /// `starting`, `running`, `restarting`, `failed` or `stopped`.
    pub state: String,
    pub restarts: u32,
    pub started_at: Option<String>,
    pub uptime_s: u64,
    pub last_error: Option<String>,
    pub mailbox_depth: u64,
}

// ---------------------------------------------------------------- users

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub username: String,
    pub email: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl User {
    /// Whether the user may trade: a placement or an amend of a disabled user's order is
    /// refused (`user_disabled`), and so is a trader token bound to one.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// `POST /api/users`, the seed's body. Any other key is refused (a misspelt `email`
/// would otherwise be a 400 about a missing field, and an extra one kept nowhere).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub email: String,
}

/// `PUT /api/users/{id}`: the fields to change. Any other key is refused: the seed stored
/// whatever it was sent, and a key agt does not keep must not answer 200 having done
/// nothing. `username` is read only to say that it cannot change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Trader,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Trader => "trader",
            Role::Viewer => "viewer",
        }
    }
    /// The role with its indefinite article, for a sentence: "an admin", "a trader".
    pub fn with_article(self) -> &'static str {
        match self {
            Role::Admin => "an admin",
            Role::Trader => "a trader",
            Role::Viewer => "a viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "trader" => Some(Role::Trader),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// `POST /api/tokens`. Any other key is refused (a mistyped field must not yield a token
/// other than the one asked for).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub role: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The answer to `POST /api/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    pub token: String,
    pub name: String,
    pub role: Role,
    pub user_id: Option<String>,
    pub created_at: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub user_id: Option<String>,
    pub created_at: String,
    pub revoked: bool,
}

// ---------------------------------------------------------------- events and audit

/// The bus envelope: the seed's Event plus `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub timestamp: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub timestamp: String,
    /// Who: `socket`, `token:<id>`, or `event:<source>` for records of bus events.
    pub actor: String,
    /// What: `POST /api/users` for a command, the event type for an event.
    pub action: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerify {
    pub ok: bool,
    pub records: u64,
    /// The sequence number of the first record whose hash does not match, or the first
    /// one missing below the chain's anchor ([`UnmetAnchor::first_missing`]), if any.
    pub first_bad: Option<u64>,
    /// The chain's end as recorded outside `audit.db`, when the chain no longer holds it
    /// (its tail was cut off or replaced). Absent when every anchor is met, so that an
    /// answer of `ok` reads as it always has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmet_anchor: Option<UnmetAnchor>,
    /// An anchor file that cannot be read (or does not parse, or does not check out):
    /// the chain's end cannot be checked against it, so `ok` is false while it stands.
    /// Absent when every anchor file reads, or none is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_unreadable: Option<UnreadableAnchor>,
}

/// An anchor file of the audit chain that cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreadableAnchor {
    /// The file, under `$AGT_HOME`: `data/audit.head` (unreadable now),
    /// `data/audit.head.unreadable` (one a start could not read, kept there), or
    /// `data/audit.head.lost` (a kept unmet anchor).
    pub file: String,
    /// Why, as it reads now: `cannot be read (Permission denied …)`, `is empty`,
    /// `does not parse (…)`, `does not check out (…)`.
    pub error: String,
}

impl UnreadableAnchor {
    /// What it means and what the operator should do about it, by file.
    pub fn advice(&self) -> String {
        let (file, error) = (&self.file, &self.error);
        if file.ends_with(".unreadable") {
            format!(
                "the audit chain's anchor could not be read when the daemon started (now: {file} {error}), so the chain's end \
                 was not checked against it: records cut from its tail then would not show. A power loss can leave the anchor \
                 so; if nothing else explains it, compare audit.db with a backup. Once you have looked into it, delete {file} \
                 to accept the chain as it is"
            )
        } else if file.ends_with(".lost") {
            format!(
                "the audit chain's kept unmet anchor ({file}) {error}, so the records it says are missing cannot be named. \
                 Restore {file} from a backup if you have one; once you have looked into it, delete {file} to accept the \
                 chain as it is"
            )
        } else {
            format!(
                "the audit chain's anchor ({file}) {error}, so the chain's end cannot be checked against it. Make it readable \
                 and writable by the daemon's user (chmod 600), or delete it: the daemon writes it anew at its next commit"
            )
        }
    }
}

/// An anchor of the audit chain (a record's seq and hash, kept in a file beside
/// `audit.db`) that the chain does not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnmetAnchor {
    /// The record the anchor names: the chain's end after a commit.
    pub seq: u64,
    pub hash: String,
    /// Where the chain ended short of `seq`; `None` when it went on past `seq` with
    /// another record there (or none: a gap).
    pub chain_end: Option<u64>,
    /// The file that keeps the anchor, under `$AGT_HOME`.
    pub file: String,
}

impl UnmetAnchor {
    /// The first record the anchor vouches for that the chain does not hold as it was:
    /// the one after the chain's end, or the anchor's own record.
    pub fn first_missing(&self) -> u64 {
        self.chain_end.map_or(self.seq, |end| end + 1)
    }
}

// ---------------------------------------------------------------- trading

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    Limit,
    Market,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

/// The wire names of the order enums (as serde writes them), for stores that keep them
/// as text: a match instead of a trip through `serde_json::Value` per column.
macro_rules! wire_names {
    ($t:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),+ }
            }
            pub fn parse(s: &str) -> Option<$t> {
                match s { $($s => Some($t::$v),)+ _ => None }
            }
        }
    };
}
wire_names!(Side { Buy => "buy", Sell => "sell" });
wire_names!(OrderType { Limit => "limit", Market => "market" });
wire_names!(TimeInForce { Gtc => "gtc", Ioc => "ioc", Fok => "fok" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
    Expired,
}

impl OrderStatus {
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "new" => OrderStatus::New,
            "partially_filled" => OrderStatus::PartiallyFilled,
            "filled" => OrderStatus::Filled,
            "cancelled" => OrderStatus::Cancelled,
            "rejected" => OrderStatus::Rejected,
            "expired" => OrderStatus::Expired,
            _ => return None,
        })
    }
}

/// The order placement body's fields, declared once for its two readings.
macro_rules! place_order {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        pub struct $name {
            /// A user id or username; a trader token implies it.
            #[serde(default)]
            pub user_id: Option<String>,
            pub symbol: String,
            pub side: Side,
            #[serde(deserialize_with = "decimal::de")]
            pub quantity: Decimal,
            #[serde(default, deserialize_with = "decimal::de_opt")]
            pub price: Option<Decimal>,
            #[serde(default, rename = "type")]
            pub kind: Option<OrderType>,
            #[serde(default)]
            pub time_in_force: Option<TimeInForce>,
            #[serde(default)]
            pub client_order_id: Option<String>,
        }
    };
}

place_order!(
    /// The order placement body of `POST /api/orders`. Any other key is refused: a
    /// mistyped `"tif": "ioc"` must not place a resting `gtc` order.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    PlaceOrder
);

place_order!(
    /// The same body as the seed's gateway took it at `POST /api/trading/orders`: other
    /// keys are ignored, as a client written against the seed may send them.
    #[derive(Debug, Clone, Deserialize)]
    SeedPlaceOrder
);

impl From<SeedPlaceOrder> for PlaceOrder {
    fn from(o: SeedPlaceOrder) -> PlaceOrder {
        let SeedPlaceOrder { user_id, symbol, side, quantity, price, kind, time_in_force, client_order_id } = o;
        PlaceOrder { user_id, symbol, side, quantity, price, kind, time_in_force, client_order_id }
    }
}

/// `PATCH /api/orders/{id}`. Any other key is refused: `{"price": 5, "qty": 3}` must
/// not amend the price alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmendOrder {
    #[serde(default, deserialize_with = "decimal::de_opt")]
    pub price: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal::de_opt")]
    pub quantity: Option<Decimal>,
}

/// `POST /api/orders/cancel-all`. Unknown keys are refused: a misspelt filter
/// (`"usr_id"`) would otherwise widen the cancel to every user's orders.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAll {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub symbol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub trade_id: String,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub price: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub quantity: Decimal,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub kind: OrderType,
    pub time_in_force: TimeInForce,
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    pub price: Option<Decimal>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub quantity: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub filled_quantity: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub remaining_quantity: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    pub average_price: Option<Decimal>,
    pub status: OrderStatus,
    pub fills: Vec<Fill>,
    pub client_order_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub reject_reason: Option<String>,
}

/// A trade on the tape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub trade_id: String,
    pub symbol: String,
    pub price: Decimal,
    pub quantity: Decimal,
    /// The side of the incoming (taker) order.
    pub taker_side: Side,
    /// The orders that traded. Left out of the tape a trader token reads
    /// (`GET /api/trades/{symbol}`): another user's order id is not shown to a trader,
    /// as its order is not (a trader finds its own trades in its orders' fills).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub buy_order_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sell_order_id: String,
    pub timestamp: String,
}

/// `GET /api/book/{symbol}`: aggregated levels, best first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookView {
    pub symbol: String,
    pub bids: Vec<(Decimal, Decimal)>,
    pub asks: Vec<(Decimal, Decimal)>,
    /// Increases with every change to this book and never goes back, across restarts
    /// too. It is one counter over all books, so it may also move with other books.
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick: Decimal,
    pub lot: Decimal,
    pub min_quantity: Decimal,
    pub max_quantity: Decimal,
}

/// `POST /api/symbols`. Any other key is refused (a mistyped `"max_qty"` must not leave
/// the default in place unnoticed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInstrument {
    pub symbol: String,
    #[serde(alias = "tick_size", deserialize_with = "decimal::de")]
    pub tick: Decimal,
    #[serde(alias = "lot_size", deserialize_with = "decimal::de")]
    pub lot: Decimal,
    #[serde(default, deserialize_with = "decimal::de_opt")]
    pub min_quantity: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal::de_opt")]
    pub max_quantity: Option<Decimal>,
}

// ---------------------------------------------------------------- accounts

/// An asset or symbol name: 1–32 of `A-Z`, `0-9`, `.` and `-`, beginning and ending with
/// a letter or digit (`AAPL`, `BRK.B`, `BTC-USD`). Punctuation alone (`..`, `-`) names
/// nothing a person could tell apart, and `/api/book/..` never reaches the daemon as
/// written. One rule for `symbol add`, `[[symbols]]`, deposits and halts.
pub fn valid_name(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let bytes = name.as_bytes();
    bytes.len() <= 32
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
}

/// What [`valid_name`] allows, for the errors that refuse a name.
pub const NAME_RULE: &str = "1-32 characters of A-Z, 0-9, '.' and '-', beginning and ending with a letter or digit";

/// `POST /api/users/{id}/deposits` and `/withdrawals`. Any other key is refused: money
/// moves only as asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub asset: String,
    #[serde(deserialize_with = "decimal::de")]
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: String,
    pub total: Decimal,
    pub held: Decimal,
    pub available: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub quantity: Decimal,
    pub average_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: String,
    pub balances: Vec<Balance>,
    pub positions: Vec<Position>,
}

/// Risk limits, global or for one user; on a user, absent fields inherit the global value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_orders: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "decimal::de_opt")]
    pub max_order_quantity: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "decimal::de_opt")]
    pub max_order_notional: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_orders_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "decimal::de_opt")]
    pub price_band_pct: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "switch::de_opt")]
    pub allow_short: Option<bool>,
}

// ---------------------------------------------------------------- market data

/// `GET /api/market/{symbol}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: String,
    pub last: Option<Decimal>,
    pub best_bid: Option<Decimal>,
    pub best_ask: Option<Decimal>,
    pub volume_24h: Decimal,
    pub high_24h: Option<Decimal>,
    pub low_24h: Option<Decimal>,
    pub trades_24h: u64,
    pub timestamp: String,
}

/// One OHLCV bar. `open_time` is the start of its interval (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    pub symbol: String,
    pub interval: String,
    pub open_time: String,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub trades: u64,
}

/// Trading halts: global and per symbol (`agt risk halt|resume`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingState {
    pub halted: bool,
    pub halted_symbols: Vec<String>,
}

/// `POST /api/risk/halt` and `/resume`. Unknown keys are refused: a misspelt `"symbl"`
/// would otherwise halt (or resume) every symbol.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaltRequest {
    #[serde(default)]
    pub symbol: Option<String>,
}

// ---------------------------------------------------------------- notifications

/// One webhook delivery (`GET /api/notifications`, `agt notify list`). Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Also sent as `X-Agt-Delivery`, the same on every attempt, so receivers can de-duplicate.
    pub id: String,
    /// The rule that queued it: `config:N` (the Nth `[[notify.webhooks]]`) or a run-time rule's id.
    pub rule: String,
    pub url: String,
    pub event_type: String,
    pub event_seq: u64,
    /// `pending` (queued or being retried), `sent`, or `failed` (attempts used up).
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

/// `POST /api/notifications/rules`: a webhook added at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookRule {
    pub url: String,
    /// Event types, or `["*"]` for every event but `NOTIFICATION_*`.
    pub events: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// A webhook rule as shown: its secret only as `"***"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRule {
    /// `config:N` for the Nth `[[notify.webhooks]]`, else the run-time rule's id.
    pub id: String,
    /// `config` or `api`.
    pub source: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub created_at: Option<String>,
}

#[cfg(test)]
mod name_tests {
    use super::valid_name;

    #[test]
    fn names_begin_and_end_with_a_letter_or_digit() {
        for ok in ["AAPL", "BRK.B", "BTC-USD", "X", "9", "A-B.C", &"A".repeat(32)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "...", "-", "-A-", "USD-", ".-USD", "-USD", "aapl", "A B", "A/B", &"A".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod time_tests {
    use super::rfc3339_micros;
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn chrono(t: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    #[test]
    fn writes_what_chrono_writes_at_the_edges() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        for t in [
            UNIX_EPOCH,
            at(0, 999_999_999),
            at(951_782_400, 0),      // 2000-02-29, a leap day of a century year
            at(4_107_456_000, 1000), // 2100-02-28 .. 03-01: 2100 is no leap year
            at(4_107_542_399, 0),
            at(1_796_000_000, 123_456_789),
            at(253_402_300_799, 999_999_000), // 9999-12-31T23:59:59.999999
            at(253_402_300_800, 0),           // year 10000: chrono's text
            UNIX_EPOCH - Duration::from_secs(1),
        ] {
            assert_eq!(rfc3339_micros(t), chrono(t), "{t:?}");
        }
        assert_eq!(rfc3339_micros(at(1_796_000_000, 123_456_789)), "2026-11-30T00:53:20.123456Z");
    }

    proptest! {
        #[test]
        fn writes_what_chrono_writes(secs in 0u64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            prop_assert_eq!(rfc3339_micros(t), chrono(t));
        }
    }
}
