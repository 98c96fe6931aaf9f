//! The two halves of the update contract: an [`Action`] is everything that can happen
//! to the dashboard (a key, a tick, a line of the event stream, an answer of the
//! daemon); an [`Effect`] is a request [`App::update`](super::app::App::update) makes
//! and the event loop performs (a snapshot to fetch, a command to send).
//!
//! Keeping I/O out of `update` is what lets the tests drive the whole dashboard by
//! feeding actions and reading the effects it asks for.

use crate::api::{
    Account, AmendOrder, AuditRecord, AuditVerify, BookView, Candle, Event, Health, Instrument, Order, PlaceOrder, Role, ServiceInfo,
    Trade, Transfer, User,
};
use crate::client::ClientError;
use crossterm::event::KeyEvent;

use super::rates::MetricsSample;

/// Something that happened; fed to `App::update` one at a time, in arrival order.
#[derive(Debug, Clone)]
pub enum Action {
    /// A key press (releases are dropped by the input thread).
    Key(KeyEvent),
    /// The terminal's size, columns by rows: at start, and whenever it changes. The state
    /// keeps it to bound what scrolls (the help) to what the screen shows.
    Resize(u16, u16),
    /// Once a second: clocks, per-second rates, the metrics sample on Overview.
    Tick,
    /// The debounce window has passed: fetch the snapshots that events made stale.
    Flush,
    /// SIGTERM or SIGHUP: leave as if the user had pressed `q`.
    Quit,
    /// Something from the daemon.
    Net(Net),
}

/// What the network side reports.
#[derive(Debug, Clone)]
pub enum Net {
    /// The event stream is open again: every snapshot may be out of date. `head` is the
    /// newest event at that moment; the stream first replays a little history up to it.
    /// `own`: the stream holds only the token's own user's events (a trader's), not the
    /// market's, so the dashboard polls what the current tab shows besides.
    Connected { head: u64, own: bool },
    /// The daemon answers this token but refuses it the event stream (why, in its
    /// words: a trader token bound to no user): the net task only watches the
    /// connection, and the dashboard polls what it shows. The role, probed first, has
    /// already been reported.
    Polling(String),
    /// The event stream broke or could not be opened; the net task retries by itself.
    Disconnected(String),
    /// The daemon refused the token (401: revoked or unknown); the net task has stopped.
    Refused(String),
    /// The role of the token (probed once per connection over TCP; the socket is admin).
    Role(Role),
    /// One event of `/api/events?follow=true`.
    Event(Box<Event>),
    /// A snapshot arrived, with how many events, at least, it may lack: `Some` when the
    /// daemon answered it behind its event bus (`X-Agt-Behind`: a machine too loaded
    /// for the feeds that build the tape, the candles and the audit log).
    Snapshot(Snapshot, Option<u64>),
    /// A snapshot could not be fetched.
    FetchFailed(Fetch, Failure),
    /// A command was answered: the daemon's JSON, or its error.
    Done(Command, Result<serde_json::Value, Failure>),
}

/// A snapshot the dashboard shows; each is the answer to one [`Fetch`].
#[derive(Debug, Clone)]
pub enum Snapshot {
    Health(Health),
    Services(Vec<ServiceInfo>),
    Orders(Vec<Order>),
    Users(Vec<User>),
    Symbols(Vec<Instrument>),
    Market(MarketData),
    Account(Account),
    Audit(Vec<AuditRecord>),
    AuditVerify(AuditVerify),
    Metrics(MetricsSample),
}

/// The Book tab's data for one symbol, fetched together so the ladder, the tape and the
/// chart always describe the same moment.
#[derive(Debug, Clone)]
pub struct MarketData {
    pub symbol: String,
    pub book: BookView,
    /// Newest first.
    pub trades: Vec<Trade>,
    /// Oldest first.
    pub candles: Vec<Candle>,
}

/// A snapshot to fetch. Also the key of staleness and in-flight tracking: one fetch per
/// key at a time, and only for keys an event made stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fetch {
    Health,
    Services,
    Orders,
    Users,
    Symbols,
    /// Book, tape and candles of a symbol.
    Market(String),
    /// The account of a user id.
    Account(String),
    Audit,
    AuditVerify,
    Metrics,
}

/// A change the user asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Place(PlaceOrder),
    Cancel { order_id: String },
    Amend { order_id: String, amend: AmendOrder },
    Deposit { user_id: String, transfer: Transfer },
    Withdraw { user_id: String, transfer: Transfer },
}

impl Command {
    /// What the command is, in a few words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Command::Place(p) => {
                let side = p.side.as_str();
                match p.price {
                    Some(px) => format!("{side} {} {} @ {px}", p.quantity, p.symbol),
                    None => format!("{side} {} {} at market", p.quantity, p.symbol),
                }
            }
            Command::Cancel { order_id } => format!("cancel {}", short_id(order_id)),
            Command::Amend { order_id, .. } => format!("amend {}", short_id(order_id)),
            Command::Deposit { transfer, .. } => format!("deposit {} {}", transfer.amount, transfer.asset),
            Command::Withdraw { transfer, .. } => format!("withdraw {} {}", transfer.amount, transfer.asset),
        }
    }
}

/// The last 8 characters of an id: enough to tell orders apart on one screen. Not the
/// first ones: ids start with a kind prefix (`ord_`) and a time-ordered part that
/// orders placed together share.
pub fn short_id(id: &str) -> &str {
    let n = id.chars().count();
    if n <= 8 {
        return id;
    }
    let start = id.char_indices().nth(n - 8).map(|(i, _)| i).unwrap_or(0);
    &id[start..]
}

/// A request that got no usable answer, in a shape the state can keep and compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status; 0 when the daemon could not be reached.
    pub status: u16,
    /// The daemon's stable error code (`insufficient_funds`), or `unreachable`.
    pub code: String,
    pub message: String,
    /// Known never to have reached the daemon ([`ClientError::nothing_sent`]): the form
    /// may say sending again is safe. False for an answer lost on the way.
    pub nothing_sent: bool,
}

impl Failure {
    /// `code: message`, as the CLI prints it.
    pub fn text(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    /// What became of a command that failed, for the form it was sent from: the daemon
    /// refused it (its own words say what to fix), or it never got there, or its answer
    /// was lost, in which case it may have been done and sending it again could do it twice.
    pub fn outcome(&self) -> String {
        if self.nothing_sent {
            format!("not sent: {} · Enter sends it again once the daemon is back", self.message)
        } else if self.status == 0 {
            self.no_answer()
        } else {
            format!("the daemon refused: {}", self.text())
        }
    }

    /// A command whose answer was lost: it may have been done, so it is not for sending
    /// again blind.
    fn no_answer(&self) -> String {
        format!("no answer: {}; it may have been done: look before sending it again", self.message)
    }

    /// What became of a command sent from no form (a cancel, asked with y/n), for the
    /// status line, led by what it was: as [`Failure::outcome`] tells a form, whether it
    /// never reached the daemon (nothing was done) or its answer was lost (it may have
    /// been done), else the daemon's refusal.
    pub fn outcome_of(&self, what: &str) -> String {
        if self.nothing_sent {
            format!("{what} not sent: {}", self.message)
        } else if self.status == 0 {
            format!("{what}: {}", self.no_answer())
        } else {
            format!("{what} failed: {}", self.text())
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let nothing_sent = e.nothing_sent();
        let (status, code, message) = match e {
            ClientError::Api(a) => (a.status, a.code.into_owned(), a.message),
            ClientError::Unreachable { .. } => (0, "unreachable".into(), e.to_string()),
            ClientError::Protocol(m) => (0, "protocol".into(), m),
            ClientError::BadUrl { .. } => (0, "bad_url".into(), e.to_string()),
            ClientError::BadToken(_) => (0, "bad_token".into(), e.to_string()),
        };
        Failure { status, code, message, nothing_sent }
    }
}

/// A request `update` wants performed. The event loop hands it to the net side, whose
/// answer comes back as an [`Action::Net`].
#[derive(Debug, Clone)]
pub enum Effect {
    Fetch(Fetch),
    /// [`Fetch::Orders`], narrowed on the daemon to what the filter names exactly.
    FetchOrders(OrdersScope),
    Send(Command),
}

/// What the Orders filter names exactly (a known user, a known symbol), sent to the daemon
/// as `user_id=`/`symbol=` so that the newest rows fetched are that user's or symbol's:
/// filtered only locally, a user's open order could be older than every row fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrdersScope {
    pub user_id: Option<String>,
    pub symbol: Option<String>,
}
