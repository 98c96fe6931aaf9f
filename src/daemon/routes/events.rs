//! `GET /api/events`: the bus as one long NDJSON (or SSE) response — replay, then follow.

use crate::api::quote::quoted;
use crate::api::{ApiError, Role, TokenInfo};
use crate::daemon::app::App;
use crate::daemon::http::{query_number, ApiResult, Caller, Query};
use crate::daemon::server::Peer;
use crate::services::bus::{BusEvent, EVENT_TYPES};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The numbers are kept as text and read by [`query_number`], so that `since=-1` is told
/// what is allowed rather than what a parser found.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default, rename = "type")]
    types: Option<String>,
    /// Text, read by [`crate::api::switch::parse`]: `follow=1` is followed, and a typo is
    /// told what is allowed rather than serde's "provided string was not `true`".
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    /// Start with the newest N events (of the asked types) instead of after `since`.
    #[serde(default)]
    tail: Option<String>,
}

/// How much of `events.db` a replay reads per page: whole blocks until this many bytes
/// of them, in one short read (a reader thread holds no read open while its client
/// takes what it sent, or `events.db`'s log could not be checkpointed meanwhile).
const PAGE_READ: usize = 256 * 1024;

/// The most a replay puts in one piece of the body (one frame past it at most): a
/// 1,000-event page handed over event by event cost a channel send, a hyper chunk and a
/// copy of each line.
const CHUNK: usize = 32 * 1024;

/// Pieces of the body queued for the client (replayed chunks, or followed events): a
/// client that stops reading holds at most about `QUEUED` [`CHUNK`]s of the daemon's
/// memory, and the reader thread's page and its one queued chunk besides.
const QUEUED: usize = 8;

/// The event types a trader token reads, each only where its `data.user_id` is the
/// token's user: its orders' lives and fills (`ORDER_EXECUTED` carries the trades' ids,
/// prices and quantities, never the other side's order), its account's deposits and
/// withdrawals, its user's record. DESIGN.md §4 lets a trader read its user's account,
/// orders and fills; everything else on the bus (other users, which orders traded, limits,
/// halts, services, config, tokens) stays an admin's and a viewer's.
pub const TRADER_TYPES: &[&str] = &[
    "USER_CREATED",
    "USER_UPDATED",
    "ACCOUNT_DEPOSITED",
    "ACCOUNT_WITHDRAWN",
    "ORDER_CREATED",
    "ORDER_REJECTED",
    "ORDER_STATUS_UPDATED",
    "ORDER_EXECUTED",
    "ORDER_CANCELLED",
    "ORDER_EXPIRED",
];

/// How many of the newest events of its types a trader's `tail=N` looks through for its
/// own: a week of everyone's orders is not read to find a quiet user's few.
const TRADER_TAIL_SCAN: usize = 200_000;

/// How often a followed stream with nothing to send looks whether its client is still
/// there (`server::Peer`): a stream of events that never come would otherwise outlive
/// its client until the daemon stops (hyper notices a closed connection only when it
/// writes to it).
const PEER_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn events(
    State(app): State<Arc<App>>,
    caller: Caller,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    // A trader reads its own user's events alone (`TRADER_TYPES`, `Reader::shows`).
    let trader: Option<Arc<str>> = match caller.role() {
        Role::Trader => Some(
            caller
                .bound_user()
                .ok_or_else(|| ApiError::forbidden("this trader token is bound to no user, so it has no events to read"))?
                .into(),
        ),
        Role::Admin | Role::Viewer => None,
    };
    let q_since = query_number("since", q.since.as_deref(), 0, u64::MAX)?;
    let q_tail = query_number("tail", q.tail.as_deref(), 0, u64::MAX)?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let limit = query_number("limit", q.limit.as_deref(), 0, u64::MAX)?.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let types: Option<Vec<String>> = match q.types.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => {
            let list: Vec<String> = t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            // `type=,` names no type: read as "these types" it streamed nothing, a 200 that
            // looked like a quiet log.
            if list.is_empty() {
                return Err(ApiError::invalid(
                    "invalid_query",
                    format!(
                        "type names no event type (got {}); give one or more, comma-separated, or leave type out for every type",
                        quoted(t)
                    ),
                )
                .into());
            }
            if let Some(bad) = list.iter().find(|x| !EVENT_TYPES.contains(&x.as_str())) {
                return Err(ApiError::invalid(
                    "unknown_event_type",
                    format!("unknown event type {}; known: {}", quoted(bad), EVENT_TYPES.join(" ")),
                )
                .into());
            }
            if caller.role() == Role::Viewer {
                if let Some(t) = list.iter().find(|t| is_token_event(t)) {
                    return Err(ApiError::forbidden(format!("a viewer token may not read tokens, nor their events ({t})")).into());
                }
            }
            if trader.is_some() {
                if let Some(t) = list.iter().find(|t| !TRADER_TYPES.contains(&t.as_str())) {
                    return Err(ApiError::forbidden(format!(
                        "a trader token reads only its own user's events, of the types {} ({t} is not one)",
                        TRADER_TYPES.join(" ")
                    ))
                    .into());
                }
            }
            Some(list)
        }
    };
    // A trader's stream reads only the blocks that hold its types.
    let types = types.or_else(|| trader.is_some().then(|| TRADER_TYPES.iter().map(|t| t.to_string()).collect()));
    let sse = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(QUEUED);
    let follow = match q.follow.as_deref() {
        None => false,
        Some(text) => crate::api::switch::parse(text).ok_or_else(|| {
            ApiError::invalid("invalid_query", format!("follow must be {}; got {}", crate::api::switch::EXPECTED, quoted(text)))
        })?,
    };
    // A browser's EventSource reconnects with the last `id:` it got (the seq) in
    // `Last-Event-ID`, and the URL it first used: resume after that id, whatever the URL says.
    let resume = match headers.get("last-event-id").map(|v| v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok())) {
        None => None,
        Some(Some(seq)) => Some(seq),
        Some(None) => return Err(ApiError::invalid("invalid_query", "Last-Event-ID must be the seq of an event (a whole number)").into()),
    };
    // Read our writes: every event published before this request is committed first (the
    // newest N of `tail` included). A follow stream shows what it missed as it comes.
    let freshness = app.sync_events(tokio::time::Instant::now() + app.sync_wait).await;
    let since = match (resume, q_since, q_tail) {
        (Some(seq), _, _) => seq,
        (None, Some(_), Some(_)) => {
            return Err(ApiError::invalid("invalid_query", "give since (events after a seq) or tail (the newest N), not both").into());
        }
        (None, None, Some(n)) => {
            // Count only what this caller may see: a viewer's newest N leave out the
            // `TOKEN_*` events the stream will hide, a trader's every other user's.
            let t = types.clone().or_else(|| (caller.role() == Role::Viewer).then(visible_to_viewers));
            let (bus, user) = (app.bus.clone(), trader.clone());
            let counted = move || match user {
                Some(u) => bus.since_for_last_kept(n, t.as_deref(), Some(&|e: &BusEvent| names_user(&e.line, &u)), TRADER_TAIL_SCAN),
                None => bus.since_for_last(n, t.as_deref()),
            };
            match tokio::task::spawn_blocking(counted).await {
                Ok(Ok(since)) => since,
                _ => return Err(ApiError::unavailable("bus").into()),
            }
        }
        (None, since, None) => since.unwrap_or(0),
    };
    if let Some(gone) = pruned_after(&app, since) {
        return Err(ApiError::new(
            410,
            "events_pruned",
            format!(
                "events {}..{gone} are no longer kept (older than events.retain_s); resume with since={gone} (from the oldest kept) or since=0",
                since + 1
            ),
        )
        .into());
    }
    let reader = Arc::new(Reader::of(caller, trader));
    tokio::spawn(stream(app, since, types, follow, limit, sse, peer.map(|Extension(p)| p), reader, tx));
    let ctype = if sse { "text/event-stream" } else { "application/x-ndjson" };
    let answer = (
        [(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    Ok(freshness.mark("events", answer))
}

/// Appends an event's frame: its envelope line (NDJSON), or an SSE event whose id is its
/// seq and whose name is its type.
fn push_frame(out: &mut Vec<u8>, seq: u64, kind: &str, line: &str, sse: bool) {
    if sse {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b"\nevent: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n\n");
    } else {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// Who reads a stream, for what it may see while it lasts.
struct Reader {
    /// The token it came with (none on the socket): a revoke ends the stream, and so
    /// does a trader token's user being disabled, checked before every page of the
    /// replay, every chunk of events followed, every peer check, and whenever a watch
    /// tells of a change, a send waiting for room included ([`Reader::refused`]).
    token: Option<Arc<TokenInfo>>,
    /// A viewer reads everything but tokens (DESIGN.md §4): `TOKEN_*` events are skipped.
    hide_tokens: bool,
    /// A trader's user: only events of [`TRADER_TYPES`] that name it are sent.
    only_user: Option<Arc<str>>,
}

impl Reader {
    fn of(caller: Caller, only_user: Option<Arc<str>>) -> Reader {
        let hide_tokens = caller.role() == Role::Viewer;
        match caller {
            Caller::Token(t) => Reader { token: Some(t), hide_tokens, only_user },
            Caller::Socket => Reader { token: None, hide_tokens, only_user },
        }
    }

    /// Why the stream may not go on, if its token would now be refused: revoked, or a
    /// trader token whose user is no longer active. The guard checks both only when a
    /// request comes (`routes::check_bound_user`); a stream outlives its request, and a
    /// disabled user's stream went on carrying its orders and deposits until the daemon
    /// stopped, although every request with the same token was refused.
    fn refused(&self, app: &App) -> Option<Why> {
        let token = self.token.as_ref()?;
        if !app.tokens.is_live(token) {
            return Some(REVOKED);
        }
        let user = self.only_user.as_deref()?;
        // A user the directory does not hold (users restarting) is not taken for disabled.
        app.directory.get(user).filter(|u| u.status != "active").map(|_| DISABLED)
    }

    /// What tells the stream at once that [`Reader::refused`] may have changed: a
    /// revoke (for a token), a change to a user (for a trader token, whose user may have
    /// been disabled). Without them a stream whose filter let no event through noticed
    /// only at its peer check, up to [`PEER_CHECK`] later: a trader's stream never sees
    /// `TOKEN_REVOKED`, nor a viewer's, and a disable's `USER_UPDATED` reaches only a
    /// trader's stream whose `type` asks for it.
    fn watches(&self, app: &App) -> [Option<tokio::sync::watch::Receiver<()>>; 2] {
        let token = self.token.as_ref().map(|_| app.tokens.revocations());
        let user = self.token.as_ref().and(self.only_user.as_ref()).map(|_| app.directory.changes());
        [token, user]
    }

    fn shows(&self, e: &BusEvent) -> bool {
        self.shows_line(&e.kind, &e.line)
    }

    /// [`Reader::shows`] for an event of type `kind` whose envelope is `line`, as a
    /// replay reads it from the store (unparsed).
    fn shows_line(&self, kind: &str, line: &str) -> bool {
        match &self.only_user {
            Some(user) => TRADER_TYPES.contains(&kind) && names_user(line, user),
            None => !(self.hide_tokens && is_token_event(kind)),
        }
    }
}

/// Whether the `user_id` of the `data` of the event whose envelope is `line` is `user`.
/// The text is looked at first: most events on a busy bus name another user, and need
/// not be parsed to say so; then only `data`'s `user_id`.
fn names_user(line: &str, user: &str) -> bool {
    if !line.contains(user) {
        return false;
    }
    match crate::services::bus::data_of(line) {
        Some(data) => data_user(data).as_deref() == Some(user),
        // Not the layout agt writes: parse it whole.
        None => serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["data"]["user_id"].as_str() == Some(user)),
    }
}

/// The `user_id` of an event's `data` (JSON text), if it is an object with a string there.
fn data_user(data: &str) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(borrow, default)]
        user_id: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Named>(data).ok()?.user_id
}

fn is_token_event(kind: &str) -> bool {
    kind.starts_with("TOKEN_")
}

/// Every event type a viewer may read: what its `tail=N` counts.
fn visible_to_viewers() -> Vec<String> {
    EVENT_TYPES.iter().filter(|t| !is_token_event(t)).map(|t| t.to_string()).collect()
}

/// The last pruned seq, if a reader resuming after `since` would miss events that were
/// pruned (`daemon::retention`).
fn pruned_after(app: &App, since: u64) -> Option<u64> {
    pruned_between(since, app.bus.first_kept())
}

/// The last pruned seq, if events after `since` and before `first_kept` are gone.
/// `since = 0` asks for whatever is kept, so it never misses any; nor does a `since` at
/// the end of the numbering, after which no event can come (`since + 1` would wrap to 0).
fn pruned_between(since: u64, first_kept: u64) -> Option<u64> {
    let next = since.checked_add(1)?;
    (since > 0 && next < first_kept).then(|| first_kept - 1)
}

/// How a replay from the store ended.
#[derive(Debug, PartialEq)]
enum Replayed {
    /// It sent everything stored after `last` that was asked for, or its `limit`.
    Done,
    /// The client has gone: there is nobody to tell anything.
    Gone,
    /// It cannot go on: the token was revoked (or its user disabled), the events after
    /// `last` were pruned, or the store could not be read. The stream must be [`cut`], not
    /// ended: an ended one reads, to a client, as "that was everything".
    Cut(Why),
}

/// Why a stream was cut: the error code a new request would be answered with, and what
/// happened.
#[derive(Debug, PartialEq, Clone, Copy)]
struct Why(&'static str, &'static str);

const REVOKED: Why = Why("unauthorized", "the token was revoked");
const DISABLED: Why = Why("user_disabled", "the token's user was disabled");
const PRUNED: Why = Why("events_pruned", "the events after the last one sent were pruned (events.retain_s)");
const UNREADABLE: Why = Why("service_unavailable", "the event store could not be read");
const STOPPING: Why = Why("service_unavailable", "the daemon stops");

/// The SSE event that tells a client in the stream itself why it was cut (`event: cut`,
/// its data the API's error shape), before the connection closes: an `EventSource`
/// reconnects on its own, and would otherwise learn why only from the answer to that.
/// An NDJSON stream has no such line (each line is an event): its client asks again.
fn cut_frame(why: Why) -> bytes::Bytes {
    let error = serde_json::json!({"error": {"code": why.0, "message": format!("event stream cut short: {}", why.1)}});
    format!("event: cut\ndata: {error}\n\n").into()
}

/// Ends a stream that was cut short so that its client cannot take it for complete: the
/// body fails, and hyper closes the connection without the chunked body's last chunk
/// (curl: "transfer closed with outstanding read data remaining"; `agt events tail` then
/// asks the daemon why, and gets its 410 or 401). Sent after the frames already queued,
/// so the client gets every event up to the cut, with no gap. An SSE stream instead ends
/// with [`cut_frame`], which says it was cut and why: hyper drops what it has not
/// written yet when a body fails, so a frame followed by a failure would rarely arrive.
async fn cut(tx: &Queue, sse: bool, why: Why) {
    let _ = tx.send(last_piece(sse, why)).await;
}

/// What ends a stream cut for `why`: [`cut_frame`] for SSE, a failed body for NDJSON.
fn last_piece(sse: bool, why: Why) -> Piece {
    if sse {
        Ok(cut_frame(why))
    } else {
        Err(std::io::Error::other(format!("event stream cut short: {}", why.1)))
    }
}

/// A piece of a stream's body, as its response reads it.
type Piece = Result<bytes::Bytes, std::io::Error>;

/// Where a stream queues its body's pieces for hyper to write.
type Queue = tokio::sync::mpsc::Sender<Piece>;

/// How a send to a stream's client went.
enum Sent {
    Queued,
    /// The client has gone.
    Gone,
    /// The reader was refused (token revoked, user disabled) while the send waited.
    Refused(Why),
}

/// Where a stream's pieces go, and what may stop them on the way.
struct Out<'a> {
    tx: &'a Queue,
    sse: bool,
    /// Hung up to end a refused reader's stream whose client reads nothing ([`Out::end`]).
    peer: Option<&'a Peer>,
    /// [`Reader::watches`], looked at while a send waits for room: a client that stopped
    /// reading leaves none, and a revoke seen only once it read again let it have the
    /// rest of the replayed page (or the next live events) first.
    watches: [Option<tokio::sync::watch::Receiver<()>>; 2],
}

impl Out<'_> {
    /// Queues `chunk` once there is room, unless the reader is refused first.
    async fn send(&mut self, app: &App, reader: &Reader, chunk: bytes::Bytes) -> Sent {
        tokio::select! {
            biased;
            why = refusal(&mut self.watches, app, reader) => Sent::Refused(why),
            room = self.tx.reserve() => match room {
                Ok(room) => {
                    room.send(Ok(chunk));
                    Sent::Queued
                }
                Err(_) => Sent::Gone,
            },
        }
    }

    /// Ends a stream cut for `why`. A refused reader's ends at once. A client still
    /// behind (the kernel holds bytes it has not taken) has the connection cut off
    /// ([`Peer::cut_off`]: a reset, and what hyper, the queue and the kernel's send buffer
    /// held is dropped), so a client that stopped reading gets at most what had reached
    /// it, not up to 4 MiB of the kernel's send buffer once it reads again. One that is
    /// level gets the cut queued, and the end if it takes it within [`HANG_UP_AFTER`];
    /// else it is cut off too. Any other cut waits for room, so that its client gets
    /// every event up to it and can resume without a gap (`events_pruned`); so does a
    /// refused one on a connection the daemon holds no [`Peer`] of (its descriptor could
    /// not be copied).
    async fn end(&self, why: Why) {
        use tokio::sync::mpsc::error::TrySendError::{Closed, Full};
        let (true, Some(peer)) = (why == REVOKED || why == DISABLED, self.peer) else {
            return cut(self.tx, self.sse, why).await;
        };
        if peer.unsent() > 0 {
            return peer.cut_off();
        }
        match self.tx.try_send(last_piece(self.sse, why)) {
            Ok(()) | Err(Closed(_)) => {
                if !taken_within(self.tx, peer, HANG_UP_AFTER).await {
                    peer.cut_off();
                }
            }
            Err(Full(_)) => peer.cut_off(),
        }
    }
}

/// Whether the client takes everything queued for it within `limit`: hyper has taken it
/// all from the queue (or is done with the connection) and the kernel holds none of it
/// unsent. Hyper takes pieces into a buffer of its own, and writes to the kernel's send
/// buffer, well before a client that stopped reading would get them; neither tells
/// anyone when it empties, so both are looked at every few milliseconds (only while a
/// refused stream ends).
async fn taken_within(tx: &Queue, peer: &Peer, limit: std::time::Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if (tx.is_closed() || tx.capacity() == tx.max_capacity()) && peer.unsent() == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Resolves with why the reader is refused once it is: looked at whenever one of its
/// `watches` tells of a change (never, for a reader with nothing to watch).
async fn refusal(watches: &mut [Option<tokio::sync::watch::Receiver<()>>; 2], app: &App, reader: &Reader) -> Why {
    let [revoked, user_changed] = watches;
    loop {
        tokio::select! {
            () = told(revoked) => {}
            () = told(user_changed) => {}
        }
        if let Some(why) = reader.refused(app) {
            return why;
        }
    }
}

/// Replays from the store after `last`, sending at most `left` events.
///
/// The store is read on a thread of the blocking pool of its own for the whole replay
/// ([`read_pages`]), on a read connection of its own (the bus lends a few side by side),
/// which hands this task whole chunks through a channel of one: two replays run side by
/// side, and one whose client reads slowly holds a thread that waits, no read open, and
/// a chunk or two. This task only passes the chunks on, so that the stream, stopped
/// (its client gone, the daemon stopping, the reader refused while a send waits),
/// sends nothing after: dropping the channel ends the thread at its next chunk.
async fn replay(
    app: &Arc<App>,
    reader: &Arc<Reader>,
    last: &mut u64,
    types: &Option<Vec<String>>,
    left: &mut usize,
    out: &mut Out<'_>,
) -> Replayed {
    let (chunks, mut read) = tokio::sync::mpsc::channel(1);
    let job = {
        let (app, reader, types, from, n, sse) = (app.clone(), reader.clone(), types.clone(), *last, *left, out.sse);
        tokio::task::spawn_blocking(move || read_pages(&app, &reader, from, types.as_deref(), n, sse, &chunks))
    };
    while let Some(chunk) = read.recv().await {
        match out.send(app, reader, chunk).await {
            Sent::Queued => {}
            Sent::Gone => return Replayed::Gone,
            Sent::Refused(why) => return Replayed::Cut(why),
        }
    }
    match job.await {
        Ok((how, through, n)) => {
            (*last, *left) = (through, n);
            how
        }
        Err(_) => Replayed::Cut(UNREADABLE),
    }
}

/// The reader thread of a [`replay`]: pages of the store after `last`, framed into chunks
/// of about [`CHUNK`], each sent once its page's read is over. Gives how the replay
/// ended, the seq it has read through, and how many events it may still send.
fn read_pages(
    app: &App,
    reader: &Reader,
    mut last: u64,
    types: Option<&[String]>,
    mut left: usize,
    sse: bool,
    chunks: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> (Replayed, u64, usize) {
    let mut page: Vec<bytes::Bytes> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    while left > 0 {
        let read = app.bus.scan_since(last, types, PAGE_READ, &mut |seq, kind, line| {
            if !reader.shows_line(kind, line) {
                return true;
            }
            if out.capacity() == 0 {
                out.reserve(CHUNK + line.len() + 64);
            }
            push_frame(&mut out, seq, kind, line, sse);
            left -= 1;
            if out.len() >= CHUNK {
                page.push(std::mem::take(&mut out).into());
            }
            left > 0
        });
        let Ok(read) = read else { return (Replayed::Cut(UNREADABLE), last, left) };
        if !out.is_empty() {
            page.push(std::mem::take(&mut out).into());
        }
        // Asked after the read: a page holding anything that followed a revoke (or a
        // disable) is not sent.
        if let Some(why) = reader.refused(app) {
            return (Replayed::Cut(why), last, left);
        }
        // Pruned before the read (a client that fell hours behind): cut the stream rather
        // than skip; resuming from `last` then answers `events_pruned`.
        if pruned_after(app, last).is_some() {
            return (Replayed::Cut(PRUNED), last, left);
        }
        for chunk in page.drain(..) {
            if chunks.blocking_send(chunk).is_err() {
                return (Replayed::Gone, last, left);
            }
        }
        last = read.through;
        if !read.more {
            break;
        }
    }
    (Replayed::Done, last, left)
}

/// How long a stream's client has, once the daemon stops or its reader is refused, to
/// take what was already sent before the connection is hung up ([`Peer::hang_up`],
/// [`Peer::cut_off`]).
const HANG_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the stream, until it is done or the daemon stops.
#[allow(clippy::too_many_arguments)]
async fn stream(
    app: Arc<App>,
    since: u64,
    types: Option<Vec<String>>,
    follow: bool,
    left: usize,
    sse: bool,
    peer: Option<Peer>,
    reader: Arc<Reader>,
    tx: Queue,
) {
    let mut shutdown = app.shutdown.subscribe();
    tokio::select! {
        () = send_events(&app, since, types, follow, left, sse, peer.as_ref(), &reader, &tx) => return,
        _ = shutdown.changed() => {}
    }
    // The daemon stops. A followed stream ends (it has no end a client could take this
    // for); a read that had not got to its end is cut, or hung up on at once if even the
    // cut cannot be queued. An SSE stream, followed or not, says why it ends.
    let queued = (sse || !follow) && tx.try_send(last_piece(sse, STOPPING)).is_ok();
    let cut_now = !follow && !queued;
    drop(tx);
    // A client that reads nothing would hold the daemon's stop for the server's whole
    // grace (10 s): hyper waits for room to write what the stream queued. A moment to take
    // it, then the connection is shut, and hyper's write fails.
    if let Some(peer) = peer {
        if !cut_now {
            tokio::time::sleep(HANG_UP_AFTER).await;
        }
        peer.hang_up();
    }
}

/// The stream itself: the replay from the store, then (`follow`) the live events.
#[allow(clippy::too_many_arguments)]
async fn send_events(
    app: &Arc<App>,
    since: u64,
    types: Option<Vec<String>>,
    follow: bool,
    mut left: usize,
    sse: bool,
    peer: Option<&Peer>,
    reader: &Arc<Reader>,
    tx: &Queue,
) {
    // Subscribe before replaying, so nothing committed in between is missed. (The
    // handler has waited for the events published before the request.) Likewise the
    // watches: a revoke during the replay ends it at its next send or page.
    let mut live = app.bus.subscribe();
    let mut out = Out { tx, sse, peer, watches: reader.watches(app) };
    let mut last = since;
    // A stream that has sent its `limit` ends here: following on would skip what was
    // stored after the replay's last event and before the live feed's next one (a gap).
    match replay(app, reader, &mut last, &types, &mut left, &mut out).await {
        Replayed::Done if follow && left > 0 => {}
        Replayed::Cut(why) => return out.end(why).await,
        Replayed::Done | Replayed::Gone => return,
    }
    // Replay may have stopped at a type filter's last match; follow from the bus's head.
    last = last.max(since);
    let mut check = tokio::time::interval(PEER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            r = live.recv() => r,
            _ = tx.closed() => return,
            why = refusal(&mut out.watches, app, reader) => return out.end(why).await,
            _ = check.tick() => {
                if peer.is_some_and(Peer::gone) {
                    return;
                }
                if let Some(why) = reader.refused(app) {
                    return out.end(why).await;
                }
                continue;
            }
        };
        let ready = take_ready(first, &mut live, &mut last, &types, reader, &mut left, sse);
        if !ready.chunk.is_empty() {
            // Asked once every event in the chunk was published: one that followed a
            // revoke (or a disable) is not sent.
            if let Some(why) = reader.refused(app) {
                return out.end(why).await;
            }
            match out.send(app, reader, ready.chunk.into()).await {
                Sent::Queued => {}
                Sent::Gone => return,
                Sent::Refused(why) => return out.end(why).await,
            }
        }
        if left == 0 {
            return;
        }
        match ready.then {
            Ok(()) => {}
            // Too slow for the live feed: catch up from the store instead.
            Err(RecvError::Lagged(_)) => match replay(app, reader, &mut last, &types, &mut left, &mut out).await {
                Replayed::Done if left > 0 => {}
                Replayed::Cut(why) => return out.end(why).await,
                Replayed::Done | Replayed::Gone => return,
            },
            Err(RecvError::Closed) => return,
        }
    }
}

/// The live events ready at once, framed into one chunk.
struct Ready {
    /// Their frames, in order: empty if none was for this reader.
    chunk: Vec<u8>,
    /// What the feed said after them: `Ok` if nothing was waiting (or the chunk was full,
    /// or the `limit` reached), else its lag or close, for the stream to act on once the
    /// chunk is sent.
    then: Result<(), RecvError>,
}

/// Frames `first` and every event already waiting behind it on the feed (up to about
/// [`CHUNK`]), skipping those at or before `last`, of other types, or not for `reader`,
/// and counting the sent ones off `left`. One chunk for a burst is one channel send and
/// one hyper write instead of one of each per event: a busy bus (a flush hands the feed
/// hundreds of events at once) cost each follower a wakeup and a write per event.
fn take_ready(
    first: Result<Arc<BusEvent>, RecvError>,
    live: &mut tokio::sync::broadcast::Receiver<Arc<BusEvent>>,
    last: &mut u64,
    types: &Option<Vec<String>>,
    reader: &Reader,
    left: &mut usize,
    sse: bool,
) -> Ready {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut chunk = Vec::new();
    let mut next = first;
    let then = loop {
        let e = match next {
            Ok(e) => e,
            Err(e) => break Err(e),
        };
        if e.seq > *last {
            *last = e.seq;
            if types.as_ref().is_none_or(|t| t.iter().any(|x| *x == e.kind)) && reader.shows(&e) {
                push_frame(&mut chunk, e.seq, &e.kind, &e.line, sse);
                *left -= 1;
                if *left == 0 || chunk.len() >= CHUNK {
                    break Ok(());
                }
            }
        }
        next = match live.try_recv() {
            Ok(e) => Ok(e),
            Err(TryRecvError::Empty) => break Ok(()),
            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        };
    };
    Ready { chunk, then }
}

/// Resolves when `watch` is told of a change; never when there is nothing to watch (a
/// stream on the socket has no token to revoke).
async fn told(watch: &mut Option<tokio::sync::watch::Receiver<()>>) {
    if let Some(rx) = watch {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `since` whose next events were pruned says so; one at the end of the numbering
    /// is not "pruned" (its `since + 1` used to wrap to 0 and claim "events 0..0").
    #[test]
    fn pruned_only_when_events_after_since_are_gone() {
        assert_eq!(pruned_between(3, 10), Some(9));
        assert_eq!(pruned_between(9, 10), None, "the next event is the first kept");
        assert_eq!(pruned_between(0, 10), None, "since=0 reads what is kept");
        assert_eq!(pruned_between(u64::MAX, 10), None);
        assert_eq!(pruned_between(u64::MAX - 1, u64::MAX), None);
    }

    /// The SSE frame of a cut carries the API's error shape, one `data` line.
    #[test]
    fn a_cut_tells_an_sse_client_why_in_the_error_shape() {
        let frame = String::from_utf8(cut_frame(PRUNED).to_vec()).unwrap();
        let data = frame.strip_prefix("event: cut\ndata: ").and_then(|d| d.strip_suffix("\n\n")).expect(&frame);
        assert!(!data.contains('\n'), "{frame}");
        let error: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(error["error"]["code"], "events_pruned");
        assert!(error["error"]["message"].as_str().unwrap().contains("pruned"), "{error}");
    }

    /// The trader's list is spelled out (a new event type is not a trader's until it is
    /// added on purpose); each name in it must be a real type.
    #[test]
    fn a_trader_reads_only_known_types_that_name_a_user() {
        for t in TRADER_TYPES {
            assert!(EVENT_TYPES.contains(t), "{t} is no event type");
            assert!(["ORDER_", "ACCOUNT_", "USER_"].iter().any(|p| t.starts_with(p)), "{t} names no user");
        }
    }

    fn live_event(seq: u64, kind: &str, user: &str) -> Arc<BusEvent> {
        Arc::new(BusEvent::from_event(crate::api::Event {
            seq,
            event_id: format!("e{seq}"),
            kind: kind.into(),
            source: "orders".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            data: serde_json::json!({"user_id": user, "order_id": format!("o{seq}"), "note": "x".repeat(150)}),
        }))
    }

    fn everyone() -> Reader {
        Reader { token: None, hide_tokens: false, only_user: None }
    }

    /// What the live loop of [`send_events`] sends for what waits on `live`: the chunks
    /// [`take_ready`] frames, one per call, until the feed is empty or `left` is spent.
    fn drain(
        live: &mut tokio::sync::broadcast::Receiver<Arc<BusEvent>>,
        last: &mut u64,
        reader: &Reader,
        left: &mut usize,
        sse: bool,
    ) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        while *left > 0 {
            let Ok(first) = live.try_recv() else { break };
            let ready = take_ready(Ok(first), live, last, &None, reader, left, sse);
            assert!(ready.then.is_ok(), "the feed neither lagged nor closed");
            chunks.push(ready.chunk);
        }
        chunks
    }

    /// A burst of live events (a flush hands the feed hundreds at once) goes out in
    /// chunks of about [`CHUNK`], each event once and in order: every chunk but the last
    /// is full, and none runs past [`CHUNK`] by more than the frame that filled it. One
    /// chunk per event was a channel send, a hyper write and a wakeup each; an unbounded
    /// chunk would hold a whole lagging feed in memory.
    #[test]
    fn a_burst_of_live_events_goes_in_few_chunks_each_bounded() {
        for sse in [false, true] {
            let (feed, mut live) = tokio::sync::broadcast::channel(4096);
            let burst = 2000u64;
            let frames: Vec<Vec<u8>> = (1..=burst)
                .map(|seq| {
                    let e = live_event(seq, "ORDER_CREATED", "u1");
                    feed.send(e.clone()).unwrap();
                    let mut frame = Vec::new();
                    push_frame(&mut frame, e.seq, &e.kind, &e.line, sse);
                    frame
                })
                .collect();
            let widest = frames.iter().map(Vec::len).max().unwrap();
            let (mut last, mut left) = (0, usize::MAX);
            let chunks = drain(&mut live, &mut last, &everyone(), &mut left, sse);
            let total: usize = frames.iter().map(Vec::len).sum();
            assert!(total > 8 * CHUNK, "the burst is worth several chunks ({total} bytes)");
            assert!(chunks.len() <= total / CHUNK + 1, "sse {sse}: {} chunks for {total} bytes", chunks.len());
            let (full, tail) = chunks.split_at(chunks.len() - 1);
            assert!(full.iter().all(|c| c.len() >= CHUNK), "sse {sse}: a chunk went before it was full");
            assert!(!tail[0].is_empty());
            assert!(chunks.iter().all(|c| c.len() < CHUNK + widest), "sse {sse}: a chunk past the bound");
            assert_eq!(chunks.concat(), frames.concat(), "sse {sse}: every event once, in order, framed as a replay frames it");
            assert_eq!((last, left), (burst, usize::MAX - burst as usize));
        }
    }

    /// What a chunk leaves out does not count towards it, nor does it end it: events
    /// already sent (at or before `last`, as a catch-up replay leaves them on the feed),
    /// and those the reader may not see. `limit` ends the chunk on its last event and
    /// leaves the rest waiting; a lag behind the chunk is told after it, not instead.
    #[test]
    fn a_chunk_skips_what_was_sent_or_is_hidden_and_stops_at_the_limit() {
        let (feed, mut live) = tokio::sync::broadcast::channel(64);
        for seq in 1..=30 {
            let user = if seq % 3 == 0 { "u1" } else { "u2" };
            feed.send(live_event(seq, "ORDER_CREATED", user)).unwrap();
        }
        let trader = Reader { token: None, hide_tokens: false, only_user: Some("u1".into()) };
        let (mut last, mut left) = (10, 4);
        let chunks = drain(&mut live, &mut last, &trader, &mut left, false);
        let seqs: Vec<u64> = chunks
            .concat()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(chunks.len(), 1, "one chunk for what was ready at once");
        assert_eq!(seqs, [12, 15, 18, 21], "after `last`, the trader's own, up to the limit");
        assert_eq!((last, left), (21, 0));
        assert_eq!(live.try_recv().unwrap().seq, 22, "the rest waits on the feed");

        // The feed overruns this reader after its next event was taken: that event is
        // still framed, and the lag comes after it.
        let first = live.try_recv().unwrap();
        for seq in 31..=200 {
            feed.send(live_event(seq, "ORDER_CREATED", "u1")).unwrap();
        }
        let (mut last, mut left) = (22, usize::MAX);
        let ready = take_ready(Ok(first), &mut live, &mut last, &None, &everyone(), &mut left, false);
        assert!(matches!(ready.then, Err(RecvError::Lagged(_))), "the lag is told");
        assert_eq!(String::from_utf8(ready.chunk).unwrap().lines().count(), 1);
        assert_eq!(last, 23);
    }

    #[test]
    fn a_viewer_counts_every_type_but_tokens() {
        let seen = visible_to_viewers();
        assert_eq!(seen.len(), EVENT_TYPES.len() - 2);
        assert!(seen.iter().all(|t| !t.starts_with("TOKEN_")));
    }
}
