//! The dashboard's side of the wire: one task follows the event stream, and every
//! [`Effect`] becomes a short task that fetches a snapshot or sends a command. All of
//! them talk through the CLI's [`Client`] and report back as [`Action::Net`].
//!
//! **Following.** The stream is `GET /api/events?follow=true&since=N`. On the first
//! connect `N` is a little before the newest event, so the Events tab opens with recent
//! history without replaying the whole log; after a break `N` is the last event seen, so
//! nothing is missed, unless the gap is longer than [`BACKLOG`], in which case the
//! stream skips ahead (the snapshots, refetched on every connect, cover the rest). The
//! same goes when the events after `N` were pruned (`events.retain_s`): it starts from
//! the oldest kept.
//! Reconnects back off from 100 ms to 2 s, so a restarting daemon is picked up within
//! about two seconds of its socket answering again.
//!
//! **A trader's stream.** A trader's token reads only its own user's events (its orders,
//! fills and transfers), so its stream is followed for those ([`Net::Connected`] with
//! `own`): they fill its Events tab and make its orders and account stale sooner. The
//! market's trades the Book tab shows never come on it, so the dashboard polls besides.
//! It opens with the newest [`BACKLOG`] of the user's own events (`tail=`): the last
//! [`BACKLOG`] sequence numbers of a busy market may hold none of a quiet user's.
//!
//! **Without the stream.** A token the daemon refuses the stream as `forbidden` (a trader
//! token bound to no user) gets a watched session instead: the role is probed and
//! reported, then [`Net::Polling`], and a light read every [`HEARTBEAT`] tells a daemon
//! gone (or the token revoked) as a broken stream would. The dashboard polls its
//! snapshots itself.

use super::action::{Action, Command, Effect, Failure, Fetch, MarketData, Net, OrdersScope, Snapshot};
use super::rates::MetricsSample;
use crate::api::{Account, AuditRecord, AuditVerify, BookView, Candle, Event, Health, Instrument, Order, Role, ServiceInfo, Trade, User};
use crate::client::{encode, Client, ClientError, Endpoint};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How many past events the stream replays at most when it (re)connects.
pub const BACKLOG: u64 = 200;
/// The error code of a `since` whose next events the daemon no longer keeps.
const PRUNED: &str = "events_pruned";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a session without the event stream checks that the daemon still answers.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// What a session without the stream reads to check the daemon and the token: any role
/// may list the instruments, and it takes no lock the order path holds.
const HEARTBEAT_PATH: &str = "/api/symbols";

/// Rows asked for: enough to fill a tall terminal, few enough to fetch in a millisecond.
const ORDERS_LIMIT: usize = 200;
const AUDIT_LIMIT: usize = 200;
const TRADES_LIMIT: usize = 60;
const CANDLES_LIMIT: usize = 120;
const BOOK_DEPTH: usize = 20;

/// Performs effects and follows the stream; cheap to clone into tasks.
#[derive(Clone)]
pub struct Wire {
    client: Client,
    tx: UnboundedSender<Action>,
    /// The zero of [`MetricsSample::at_ms`].
    started: Instant,
}

impl Wire {
    pub fn new(client: Client, tx: UnboundedSender<Action>) -> Wire {
        Wire { client, tx, started: Instant::now() }
    }

    fn report(&self, net: Net) -> bool {
        self.tx.send(Action::Net(net)).is_ok()
    }

    /// Starts the task that follows `/api/events`; it ends when the dashboard does.
    pub fn follow(&self) {
        let wire = self.clone();
        tokio::spawn(async move { wire.follow_forever().await });
    }

    async fn follow_forever(self) {
        let mut last_seen: Option<u64> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            let ended = match self.follow_once(&mut last_seen, &mut backoff).await {
                Err(Ended::Denied(why)) => self.watch(why, &mut backoff).await,
                other => other,
            };
            let why = match ended {
                Ok(()) => return, // the dashboard has gone
                Err(Ended::Broke(why)) => why,
                // The heartbeat itself refused as `forbidden`: should not happen (every
                // role reads it); retried like a break, saying why.
                Err(Ended::Denied(why)) => why,
                // A revoked or unknown token never works again: say so, and stop asking.
                Err(Ended::Refused(why)) => {
                    self.report(Net::Refused(why));
                    return;
                }
            };
            if !self.report(Net::Disconnected(why)) {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: find where to start, open the stream, forward events until it
    /// breaks. `Ok` means nobody listens any more; `Err` says why the stream ended.
    async fn follow_once(&self, last_seen: &mut Option<u64>, backoff: &mut Duration) -> Result<(), Ended> {
        let role = probe_role(&self.client).await;
        // Its own user's events alone: the daemon counts `tail` and `head` among them.
        let own = role == Some(Role::Trader);
        let head = newest_seq(&self.client).await.map_err(Ended::of)?;
        let floor = head.saturating_sub(BACKLOG);
        // The newest BACKLOG events (a trader's: of its own, which the daemon counts).
        let tail = format!("/api/events?follow=true&tail={BACKLOG}");
        // A head below what we saw means a new event log (another home, a wiped one).
        // After a break an admin replays at most BACKLOG events; a trader's own since its
        // last may lie further back than that in the market's.
        let path = match *last_seen {
            Some(seen) if seen <= head => format!("/api/events?follow=true&since={}", if own { seen } else { seen.max(floor) }),
            _ => tail.clone(),
        };
        let mut lines = match self.client.get_lines(&path).await {
            // Events after `since` were pruned: the newest that are kept instead.
            Err(e) if e.code() == Some(PRUNED) => self.client.get_lines(&tail).await,
            other => other,
        }
        .map_err(Ended::of)?;
        *backoff = BACKOFF_MIN;
        if !self.report(Net::Connected { head, own }) {
            return Ok(());
        }
        if let Some(role) = role {
            self.report(Net::Role(role));
        }
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    // A line this client cannot read is skipped, not fatal.
                    let Ok(event) = serde_json::from_str::<Event>(&line) else { continue };
                    *last_seen = Some(event.seq);
                    if !self.report(Net::Event(Box::new(event))) {
                        return Ok(());
                    }
                }
                Ok(None) => return Err(Ended::Broke("the daemon closed the event stream".into())),
                Err(e) => return Err(Ended::of(e)),
            }
        }
    }

    /// A session the daemon refuses the stream: probes and reports the role (so the
    /// dashboard never asks for what the role may not read), says it is polled, then
    /// reads [`HEARTBEAT_PATH`] every [`HEARTBEAT`] until that fails. `Ok` means nobody
    /// listens any more.
    async fn watch(&self, why: String, backoff: &mut Duration) -> Result<(), Ended> {
        let role = probe_role(&self.client).await;
        if let Some(role) = role {
            if !self.report(Net::Role(role)) {
                return Ok(());
            }
        }
        *backoff = BACKOFF_MIN;
        if !self.report(Net::Polling(why)) {
            return Ok(());
        }
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if self.tx.is_closed() {
                return Ok(());
            }
            self.client.get(HEARTBEAT_PATH).await.map_err(Ended::of)?;
        }
    }

    /// Performs one effect on its own task; the answer comes back as an action.
    pub fn perform(&self, effect: Effect) {
        let wire = self.clone();
        tokio::spawn(async move {
            match effect {
                Effect::Fetch(key) => {
                    let net = match wire.fetch(&key).await {
                        Ok((s, behind)) => Net::Snapshot(s, behind),
                        Err(f) => Net::FetchFailed(key, f),
                    };
                    wire.report(net);
                }
                Effect::FetchOrders(scope) => {
                    let net = match wire.orders(&scope).await {
                        Ok(rows) => Net::Snapshot(Snapshot::Orders(rows), None),
                        Err(f) => Net::FetchFailed(Fetch::Orders, f),
                    };
                    wire.report(net);
                }
                Effect::Send(command) => {
                    let result = send(&wire.client, &command).await.map_err(Failure::from);
                    wire.report(Net::Done(command, result));
                }
            }
        });
    }

    /// The newest orders of every status, of the scope's user and symbol if it names them.
    async fn orders(&self, scope: &OrdersScope) -> Result<Vec<Order>, Failure> {
        let mut path = format!("/api/orders?status=all&limit={ORDERS_LIMIT}");
        if let Some(u) = &scope.user_id {
            path.push_str(&format!("&user_id={}", encode(u)));
        }
        if let Some(s) = &scope.symbol {
            path.push_str(&format!("&symbol={}", encode(s)));
        }
        get::<Vec<Order>>(&self.client, &path).await
    }

    /// One snapshot, and how many events, at least, the answers it was read from may
    /// lack (`None`: current). Only what the daemon builds from its event bus can be
    /// behind: the tape and the candles, the audit log.
    async fn fetch(&self, key: &Fetch) -> Result<(Snapshot, Option<u64>), Failure> {
        let c = &self.client;
        Ok((
            match key {
                Fetch::Health => Snapshot::Health(get::<Health>(c, "/health").await?),
                Fetch::Services => Snapshot::Services(get::<Vec<ServiceInfo>>(c, "/api/services").await?),
                Fetch::Orders => Snapshot::Orders(self.orders(&OrdersScope::default()).await?),
                Fetch::Users => Snapshot::Users(get::<Vec<User>>(c, "/api/users").await?),
                Fetch::Symbols => Snapshot::Symbols(get::<Vec<Instrument>>(c, "/api/symbols").await?),
                Fetch::Market(symbol) => {
                    let s = encode(symbol);
                    let book = format!("/api/book/{s}?depth={BOOK_DEPTH}");
                    let trades = format!("/api/trades/{s}?limit={TRADES_LIMIT}");
                    let candles = format!("/api/market/{s}/candles?interval=1m&limit={CANDLES_LIMIT}");
                    let (book, trades, candles) = tokio::join!(
                        get::<BookView>(c, &book),
                        get_marked::<Vec<Trade>>(c, &trades),
                        get_marked::<Vec<Candle>>(c, &candles)
                    );
                    let ((trades, trades_behind), (candles, candles_behind)) = (trades?, candles?);
                    let behind = trades_behind.max(candles_behind);
                    return Ok((Snapshot::Market(MarketData { symbol: symbol.clone(), book: book?, trades, candles }), behind));
                }
                Fetch::Account(user_id) => Snapshot::Account(get::<Account>(c, &format!("/api/users/{}/account", encode(user_id))).await?),
                Fetch::Audit => {
                    let (records, behind) = get_marked::<Vec<AuditRecord>>(c, &format!("/api/audit?limit={AUDIT_LIMIT}")).await?;
                    return Ok((Snapshot::Audit(records), behind));
                }
                Fetch::AuditVerify => {
                    let (verify, behind) = get_marked::<AuditVerify>(c, "/api/audit/verify").await?;
                    return Ok((Snapshot::AuditVerify(verify), behind));
                }
                Fetch::Metrics => {
                    let text = c.get_text("/metrics").await?;
                    Snapshot::Metrics(MetricsSample::from_text(&text, self.started.elapsed().as_millis() as u64))
                }
            },
            None,
        ))
    }
}

async fn get<T: DeserializeOwned>(client: &Client, path: &str) -> Result<T, Failure> {
    let v = client.get(path).await?;
    typed(path, v)
}

/// [`get`] of a read the daemon may answer behind its event bus, with how many events,
/// at least, the answer may lack. Each task reads its own answer's mark: the tasks share
/// the client, and its [`Client::staleness`] cannot tell their reads apart.
async fn get_marked<T: DeserializeOwned>(client: &Client, path: &str) -> Result<(T, Option<u64>), Failure> {
    let (v, behind) = client.get_marked(path).await?;
    Ok((typed(path, v)?, behind))
}

fn typed<T: DeserializeOwned>(path: &str, v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure {
        status: 0,
        code: "protocol".into(),
        message: format!("{path}: unexpected answer ({e})"),
        nothing_sent: false,
    })
}

async fn send(client: &Client, command: &Command) -> Result<serde_json::Value, ClientError> {
    match command {
        Command::Place(p) => client.post("/api/orders", Some(&json(p))).await,
        Command::Cancel { order_id } => client.delete(&format!("/api/orders/{}", encode(order_id)), None).await,
        Command::Amend { order_id, amend } => client.patch(&format!("/api/orders/{}", encode(order_id)), Some(&json(amend))).await,
        Command::Deposit { user_id, transfer } => {
            client.post(&format!("/api/users/{}/deposits", encode(user_id)), Some(&json(transfer))).await
        }
        Command::Withdraw { user_id, transfer } => {
            client.post(&format!("/api/users/{}/withdrawals", encode(user_id)), Some(&json(transfer))).await
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("wire types serialize")
}

/// Why a followed stream ended: a break the net task retries, the token refused (401),
/// which no retry mends, or the stream denied to the token's role (403 `forbidden`),
/// which a session without it can do without.
enum Ended {
    Broke(String),
    Refused(String),
    Denied(String),
}

impl Ended {
    fn of(e: ClientError) -> Ended {
        match &e {
            ClientError::Api(a) if a.status == 401 => Ended::Refused(a.message.clone()),
            // Not every 403: a disabled user's token (`user_disabled`) works again once
            // the user is enabled, so that one is retried.
            ClientError::Api(a) if a.status == 403 && a.code == "forbidden" => Ended::Denied(a.message.clone()),
            _ => Ended::Broke(e.to_string()),
        }
    }
}

/// The newest event's sequence number (0 without events): one request, `tail=1`.
async fn newest_seq(client: &Client) -> Result<u64, ClientError> {
    let mut lines = client.get_lines("/api/events?tail=1").await?;
    let Some(line) = lines.next_line().await? else { return Ok(0) };
    serde_json::from_str::<Event>(&line).map(|e| e.seq).map_err(|e| ClientError::Protocol(format!("an event line: {e}")))
}

/// The token's role, over TCP: `GET /api/tokens` is for admins only, and the audit log
/// for readers (admins and viewers), so two reads tell the three roles apart without
/// changing anything. Not `GET /api/users`: a trader lists its own user there; nor the
/// event stream, which a trader reads too (its own user's events). The socket is always admin: no probe.
async fn probe_role(client: &Client) -> Option<Role> {
    if matches!(client.endpoint(), Endpoint::Unix(_)) {
        return Some(Role::Admin);
    }
    let forbidden = |r: &Result<serde_json::Value, ClientError>| matches!(r, Err(ClientError::Api(e)) if e.status == 403);
    let tokens = client.get("/api/tokens").await;
    if tokens.is_ok() {
        return Some(Role::Admin);
    }
    if !forbidden(&tokens) {
        return None;
    }
    let audit = client.get("/api/audit?limit=1").await;
    if audit.is_ok() {
        Some(Role::Viewer)
    } else if forbidden(&audit) {
        Some(Role::Trader)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_401_ends_the_follow_for_good() {
        let refused = ClientError::Api(crate::api::ApiError::unauthorized("revoked"));
        assert!(matches!(Ended::of(refused), Ended::Refused(m) if m == "revoked"));
        let gone = ClientError::Unreachable { target: "x".into(), reason: "refused".into(), delivery: crate::client::Delivery::NotSent };
        assert!(matches!(Ended::of(gone), Ended::Broke(_)));
        let busy = ClientError::Api(crate::api::ApiError::unavailable("bus"));
        assert!(matches!(Ended::of(busy), Ended::Broke(_)));
    }

    /// A stream refused to the role is done without; a disabled user's 403 is waited out.
    #[test]
    fn a_forbidden_stream_is_done_without_and_a_disabled_user_waited_out() {
        let denied = ClientError::Api(crate::api::ApiError::forbidden("a trader token may only read its own user's data"));
        assert!(matches!(Ended::of(denied), Ended::Denied(m) if m.starts_with("a trader token")));
        let disabled = ClientError::Api(crate::api::ApiError::new(403, "user_disabled", "user alice is disabled"));
        assert!(matches!(Ended::of(disabled), Ended::Broke(_)));
    }
}
