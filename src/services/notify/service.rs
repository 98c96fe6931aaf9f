//! The notify actor: rules, the delivery queue in `data/notify.db`, and the outcome of
//! every attempt. It never does network I/O itself; [`super::sender`] does.

use super::fault::OutcomeFault;
use super::sender::MAX_IN_FLIGHT_PER_URL;
use super::{check_rule, shown_url, wants, Attempt, AttemptResult, Cmd, Outcome, Tuning};
use crate::api::{ApiError, Delivery, NewWebhookRule, WebhookRule};
use crate::daemon::metrics::{self, ResultLabel};
use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use crate::services::config::settings::MASKED_SECRET;
use crate::services::config::SharedSettings;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Finished (sent or failed) deliveries kept for the log; older ones are pruned.
const KEEP_FINISHED: i64 = 100_000;
/// How often finished deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// At most this many deliveries of removed webhooks are given up at a time (one
/// `NOTIFICATION_FAILED` each, in one commit); a larger backlog goes on at the next tick.
const GIVE_UP_PER_CALL: usize = 10_000;

pub struct Notify {
    /// The last bus sequence handled: replays at or below it are ignored.
    last_event_seq: u64,
    /// `last_event_seq` as `meta` holds it: written once per batch
    /// ([`Service::before_commit`]), not once per event.
    stored_event_seq: u64,
    /// The run-time rules; the config's `[[notify.webhooks]]` are read live from `settings`.
    rules: Vec<Rule>,
    settings: SharedSettings,
    /// The event types of `rules`, for the feed ([`super::Interest`]).
    interest: super::Interest,
    tuning: Tuning,
    /// Deliveries handed to the sender and not yet reported back, by id, with their URL
    /// (for [`MAX_IN_FLIGHT_PER_URL`], and so that a removed webhook's delivery being
    /// attempted is left to its outcome). Each `Due` replaces it with the sender's own
    /// list ([`Cmd::Due`]), so a restart of notify alone loses none of it.
    in_flight: HashMap<String, String>,
    /// Whether `in_flight` is the sender's: false from a start until the sender's first
    /// `Due`. Until then nothing is handed out or given up (`due` and `sweep` wait), as
    /// any pending delivery may be one the sender is attempting.
    sender_known: bool,
    /// Every URL with pending deliveries, and perhaps a few without (dropped when
    /// [`Notify::due`] finds none there): where `due` looks, a URL at a time.
    pending_urls: HashSet<String>,
    /// The sender's `Due` request while nothing was due, answered when something is.
    parked: Option<(usize, Reply<Vec<Attempt>>)>,
    last_prune: Instant,
    /// The config's webhook URLs as [`Notify::sweep`] last saw them (`None` before its
    /// first look): a change may have removed one whose deliveries are to be given up.
    config_urls: Option<Vec<String>>,
    /// Removed webhooks whose pending deliveries are still to be given up: a run-time
    /// rule's id, or `None` for the config's (those at a URL it no longer lists).
    sweeps: Vec<Option<String>>,
    /// `AGT_FAULT_NOTIFY_OUTCOME` (tests only; [`super::fault`]).
    fault: Option<OutcomeFault>,
}

/// A webhook subscription, from the config or added at run time.
#[derive(Debug, Clone)]
struct Rule {
    id: String,
    url: String,
    events: Vec<String>,
    secret: Option<String>,
    created_at: Option<String>,
}

impl Rule {
    fn shown(&self) -> WebhookRule {
        WebhookRule {
            source: if self.id.starts_with("config:") { "config" } else { "api" }.into(),
            id: self.id.clone(),
            url: shown_url(&self.url),
            events: self.events.clone(),
            secret: self.secret.as_ref().map(|_| MASKED_SECRET.to_string()),
            created_at: self.created_at.clone(),
        }
    }
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE deliveries (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        rule TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT,
        event_seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at INTEGER,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        delivered_at TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
    CREATE TABLE rules (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_event_seq', -1);",
    // A delivery's secret is its rule's, looked up when it is sent (`Notify::due`), not
    // copied into every delivery, where it outlived the webhook.
    "UPDATE deliveries SET secret = NULL;",
    // `Notify::due` asks for the oldest due deliveries of one URL at a time.
    "CREATE INDEX deliveries_url_due ON deliveries(status, url, next_attempt_at);",
    // `Notify::give_up_removed` finds a removed rule's pending deliveries without reading
    // anyone else's. Pending ones only: the finished, most of the table, stay out of it.
    "CREATE INDEX deliveries_pending_rule ON deliveries(rule, n) WHERE status = 'pending';",
    // The same for a webhook removed from the config, found by its URL: through
    // `deliveries_url_due` it read every pending delivery at that URL, a run-time rule's
    // backlog there included. The condition is the query's, word for word, as SQLite
    // uses a partial index only for a query whose terms include the index's.
    "CREATE INDEX deliveries_pending_config ON deliveries(url, n) WHERE status = 'pending' AND rule LIKE 'config:%';",
];

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339_of_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_default()
}

/// Counts `n` outcomes of `result` once the batch commits: counted before, an outcome a
/// crash took back was counted again when the sender reported it to the next notify.
fn count(after: &mut AfterCommit, result: &'static str, n: u64) {
    after.then(move || {
        metrics::get().notification_deliveries.get_or_create(&ResultLabel { result: result.to_string() }).inc_by(n);
    });
}

fn row_to_delivery(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        rule: r.get(1)?,
        url: shown_url(&r.get::<_, String>(2)?),
        event_type: r.get(3)?,
        event_seq: r.get::<_, i64>(4)? as u64,
        status: r.get(5)?,
        attempts: r.get::<_, i64>(6)? as u32,
        last_error: r.get(7)?,
        next_attempt_at: r.get::<_, Option<i64>>(8)?.map(rfc3339_of_ms),
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        delivered_at: r.get(11)?,
    })
}

impl Notify {
    /// Every rule: the config's first, then the run-time ones.
    fn all_rules(&self) -> Vec<Rule> {
        let settings = self.settings.get();
        let config = settings.notify.webhooks.iter().enumerate().map(|(i, w)| Rule {
            id: format!("config:{i}"),
            url: w.url.clone(),
            events: w.events.clone(),
            secret: w.secret.clone().filter(|s| !s.is_empty()),
            created_at: None,
        });
        config.chain(self.rules.iter().cloned()).collect()
    }

    /// Queues one delivery per rule that wants the event. Two rules naming the same URL
    /// make two deliveries, each signed with its own rule's secret and given up only when
    /// its own rule goes: merging them by URL signed one receiver's posts with another
    /// rule's key. Returns how many.
    fn enqueue(&mut self, tx: &Connection, e: &crate::services::bus::BusEvent) -> Result<usize, ServiceError> {
        let settings = self.settings.get();
        // Every event passes through here: find the wanting rules before allocating anything.
        let config = settings.notify.webhooks.iter().enumerate().filter(|(_, w)| wants(&w.events, e));
        let wanting: Vec<_> = config
            .map(|(i, w)| (format!("config:{i}"), &w.url))
            .chain(self.rules.iter().filter(|r| wants(&r.events, e)).map(|r| (r.id.clone(), &r.url)))
            .collect();
        if wanting.is_empty() {
            return Ok(0);
        }
        let (now, at) = (now_ms(), crate::api::now_rfc3339());
        let mut insert = tx.prepare_cached(
            "INSERT INTO deliveries (id, rule, url, secret, event_seq, event_type, payload, status, attempts,
                                     next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?9, ?9)",
        )?;
        // The secret column stays empty: `due` signs with the webhook's secret as it stands.
        let mut new_urls = Vec::new();
        for (rule, url) in &wanting {
            let id = uuid::Uuid::now_v7().to_string();
            insert.execute(params![id, rule, url, None::<&str>, e.seq as i64, e.kind, &*e.line, now, at])?;
            if !self.pending_urls.contains(url.as_str()) {
                new_urls.push(url.to_string());
            }
        }
        let queued = wanting.len();
        self.pending_urls.extend(new_urls);
        Ok(queued)
    }

    /// Up to `max` pending deliveries due now and not already with the sender; marks them
    /// as with the sender. Each is signed with its webhook's secret as it stands now; one
    /// whose webhook is gone (removed from the config, or its rule deleted) is given up
    /// instead of sent, with every other pending delivery of that webhook
    /// ([`Notify::sweep`]): removing a webhook stops its posts.
    ///
    /// No URL gets more than [`MAX_IN_FLIGHT_PER_URL`] deliveries with the sender at once,
    /// so a receiver that hangs holds that many of the sender's slots, not all of them,
    /// and the others' deliveries keep flowing. The oldest due first.
    ///
    /// It asks the store URL by URL ([`Notify::pending_urls`], the index
    /// `deliveries_url_due`), a few rows each, skipping URLs at their cap: this runs at
    /// every tick and for every batch of events that queues a delivery, and one query
    /// over all pending deliveries that left out the capped URLs read every row of their
    /// backlog each time. A dead receiver with 130,000 pending made notify take ~0.2 s a
    /// message: its feed fell minutes behind, so every other webhook's deliveries waited
    /// as long, and `GET /api/notifications` timed out behind them.
    fn due(&mut self, tx: &Connection, max: usize, after: &mut AfterCommit) -> Result<Vec<Attempt>, ServiceError> {
        if !self.sender_known {
            return Ok(Vec::new());
        }
        let mut per_url: HashMap<String, usize> = HashMap::new();
        for url in self.in_flight.values() {
            *per_url.entry(url.clone()).or_default() += 1;
        }
        let mut stmt = tx.prepare_cached(
            "SELECT id, url, rule, event_type, payload, attempts, next_attempt_at, n FROM deliveries
             WHERE status = 'pending' AND url = ?1 AND next_attempt_at <= ?2
             ORDER BY next_attempt_at, n LIMIT ?3",
        )?;
        let mut any_pending = tx.prepare_cached("SELECT 1 FROM deliveries WHERE status = 'pending' AND url = ?1 LIMIT 1")?;
        let mut given_up = self.sweep(tx, GIVE_UP_PER_CALL, after)?;
        let settings = self.settings.get();
        let now = now_ms();
        // (next_attempt_at, n, attempt) of every URL's oldest due deliveries, up to its free slots.
        let mut found: Vec<(i64, i64, Attempt)> = Vec::new();
        let mut urls: Vec<String> = self.pending_urls.iter().cloned().collect();
        // Each round after the first follows one that gave up at least one more removed
        // webhook's deliveries (and looks again only at the URLs where it met one), so
        // this ends.
        loop {
            let mut gone_at: Vec<String> = Vec::new();
            for url in &urls {
                let sending = per_url.get(url).copied().unwrap_or(0);
                if sending >= MAX_IN_FLIGHT_PER_URL {
                    continue;
                }
                // Its deliveries with the sender may be among the oldest due: skipped below.
                let rows = stmt.query_map(params![url, now, MAX_IN_FLIGHT_PER_URL as i64], |r| {
                    Ok((
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        Attempt {
                            id: r.get(0)?,
                            url: r.get(1)?,
                            secret: None,
                            event_type: r.get(3)?,
                            payload: r.get(4)?,
                            attempts: r.get::<_, i64>(5)? as u32,
                        },
                    ))
                })?;
                let (mut fetched, mut taken) = (0, sending);
                for row in rows {
                    let (rule, at, n, mut a) = row?;
                    fetched += 1;
                    if taken >= MAX_IN_FLIGHT_PER_URL || self.in_flight.contains_key(&a.id) {
                        continue;
                    }
                    // A config webhook by its url (its index moves when the list changes; a
                    // url is listed once in the config), a run-time rule by its id.
                    let config = rule.starts_with("config:");
                    let webhook = if config {
                        settings.notify.webhooks.iter().find(|w| w.url == a.url).map(|w| w.secret.clone())
                    } else {
                        self.rules.iter().find(|r| r.id == rule).map(|r| r.secret.clone())
                    };
                    match webhook {
                        Some(secret) => {
                            taken += 1;
                            a.secret = secret.filter(|s| !s.is_empty());
                            found.push((at, n, a));
                        }
                        // Gone (after a restart, say, which forgets `sweeps`): given up below.
                        None => {
                            let which = (!config).then_some(rule);
                            if !self.sweeps.contains(&which) {
                                self.sweeps.push(which);
                            }
                            if !gone_at.contains(url) {
                                gone_at.push(url.clone());
                            }
                        }
                    }
                }
                // A URL with nothing pending left is not asked again until a delivery for it is queued.
                if fetched == 0 && sending == 0 && any_pending.query_row([url], |_| Ok(())).optional()?.is_none() {
                    self.pending_urls.remove(url);
                }
            }
            if gone_at.is_empty() || given_up >= GIVE_UP_PER_CALL {
                break;
            }
            let swept = self.sweep(tx, GIVE_UP_PER_CALL - given_up, after)?;
            if swept == 0 {
                break;
            }
            given_up += swept;
            // Looked at again: what was found there is found again.
            found.retain(|(_, _, a)| !gone_at.contains(&a.url));
            urls = gone_at;
        }
        found.sort_by_key(|(at, n, _)| (*at, *n));
        found.truncate(max);
        let out: Vec<Attempt> = found.into_iter().map(|(_, _, a)| a).collect();
        for a in &out {
            self.in_flight.insert(a.id.clone(), a.url.clone());
        }
        Ok(out)
    }

    /// Gives up the pending deliveries of removed webhooks ([`Notify::sweeps`], and the
    /// config's if its URLs changed since the last look), at most `budget` of them;
    /// returns how many. A sweep that is not done stays for the next call.
    fn sweep(&mut self, tx: &Connection, budget: usize, after: &mut AfterCommit) -> Result<usize, ServiceError> {
        if !self.sender_known {
            return Ok(0);
        }
        let urls: Vec<String> = self.settings.get().notify.webhooks.iter().map(|w| w.url.clone()).collect();
        if self.config_urls.as_ref() != Some(&urls) {
            self.config_urls = Some(urls);
            if !self.sweeps.contains(&None) {
                self.sweeps.push(None);
            }
        }
        let mut given_up = 0;
        while let Some(which) = self.sweeps.first().cloned() {
            let limit = budget - given_up;
            if limit == 0 {
                break;
            }
            let n = self.give_up_removed(tx, which.as_deref(), limit, after)?;
            given_up += n;
            if n < limit {
                self.sweeps.remove(0);
            }
        }
        Ok(given_up)
    }

    /// Gives up, without an attempt, the pending deliveries of a webhook that is gone: the
    /// run-time rule `rule`, or (`None`) the config's at a URL it no longer lists. All of
    /// them at once, up to `limit`, whether due or not: given up one page per `Due`, a
    /// removed receiver's backlog held back every other webhook's deliveries (10,000 of
    /// them, ~80 s). One with the sender is left for its outcome to settle (it may be
    /// delivered). `NOTIFICATION_FAILED` says why, for each. Returns how many.
    ///
    /// It reads only the gone webhook's deliveries: a rule's through the index
    /// `deliveries_pending_rule`, the config's a URL at a time (`deliveries_pending_config`,
    /// the URLs of [`Notify::pending_urls`] the config no longer lists; not a run-time
    /// rule's deliveries at the same URL). One query for both,
    /// its condition chosen per row, read every pending delivery each time: ~0.3 s for one
    /// `DELETE` of a rule beside a dead receiver's backlog of 130,000.
    fn give_up_removed(&self, tx: &Connection, rule: Option<&str>, limit: usize, after: &mut AfterCommit) -> Result<usize, ServiceError> {
        const SET: &str = "UPDATE deliveries SET status = 'failed', last_error = ?4, next_attempt_at = NULL, updated_at = ?5
                           WHERE n IN (SELECT n FROM deliveries WHERE status = 'pending' AND id NOT IN (SELECT value FROM json_each(?2))";
        const RETURNING: &str = "ORDER BY n LIMIT ?3) RETURNING id, url, event_type, event_seq, attempts";
        let error = "its webhook was removed before it was delivered";
        let sending = serde_json::to_string(&self.in_flight.keys().collect::<Vec<_>>()).expect("strings serialize");
        let at = crate::api::now_rfc3339();
        let (sql, keys): (String, Vec<&str>) = match rule {
            Some(rule) => (format!("{SET} AND rule = ?1 {RETURNING}"), vec![rule]),
            None => {
                let listed = self.config_urls.as_deref().unwrap_or_default();
                let gone = self.pending_urls.iter().filter(|u| !listed.contains(u)).map(String::as_str).collect();
                (format!("{SET} AND url = ?1 AND rule LIKE 'config:%' {RETURNING}"), gone)
            }
        };
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut n = 0;
        for key in keys {
            let left = (limit - n).min(i64::MAX as usize) as i64;
            if left == 0 {
                break;
            }
            let rows = stmt.query_map(params![key, sending, left, error, at], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?))
            })?;
            for row in rows {
                let (id, url, event_type, event_seq, attempts) = row?;
                n += 1;
                after.event(
                    "NOTIFICATION_FAILED",
                    serde_json::json!({"delivery_id": id, "url": shown_url(&url), "event_type": event_type, "event_seq": event_seq,
                                       "attempts": attempts, "error": error}),
                );
            }
        }
        if n > 0 {
            count(after, "failed", n as u64);
        }
        Ok(n)
    }

    /// Answers a parked `Due` if anything has become due.
    fn wake_sender(&mut self, tx: &Connection, after: &mut AfterCommit) -> Result<(), ServiceError> {
        if let Some((max, reply)) = self.parked.take() {
            if reply.is_closed() {
                return Ok(());
            }
            let due = self.due(tx, max, after)?;
            if due.is_empty() {
                self.parked = Some((max, reply));
            } else {
                after.reply(reply, Ok(due));
            }
        }
        Ok(())
    }

    /// Records one attempt's outcome; emits `NOTIFICATION_SENT` on success and
    /// `NOTIFICATION_FAILED` when the delivery is given up (not on each failed attempt).
    /// An outcome already recorded (the delivery is settled, or has had more attempts
    /// since) changes nothing: the sender reports again what it has not seen committed.
    fn record(&mut self, tx: &Connection, outcome: Outcome, after: &mut AfterCommit) -> Result<(), ServiceError> {
        let Outcome { id, attempts: before, result } = outcome;
        let id = id.as_str();
        let row: Option<(String, String, i64, i64, String)> = tx
            .prepare_cached("SELECT url, event_type, event_seq, attempts, status FROM deliveries WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()?;
        // Unknown, already settled or already counted (reported again): nothing to do.
        let Some((url, event_type, event_seq, attempts, status)) = row else {
            self.in_flight.remove(id);
            return Ok(());
        };
        if status != "pending" {
            self.in_flight.remove(id);
            return Ok(());
        }
        if attempts != i64::from(before) {
            // An earlier attempt's outcome, reported again: the delivery may be out with
            // the sender once more, and then `in_flight` holds that attempt. Taken out, the
            // delivery was handed out twice at once (posted again after its 200).
            return Ok(());
        }
        self.in_flight.remove(id);
        let attempts = attempts + 1;
        let at = crate::api::now_rfc3339();
        let url = shown_url(&url);
        match result {
            AttemptResult::Delivered => {
                tx.prepare_cached(
                    "UPDATE deliveries SET status = 'sent', attempts = ?2, next_attempt_at = NULL, last_error = NULL,
                     updated_at = ?3, delivered_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, attempts, at])?;
                count(after, "sent", 1);
                after.event(
                    "NOTIFICATION_SENT",
                    serde_json::json!({"delivery_id": id, "url": url, "event_type": event_type, "event_seq": event_seq, "attempts": attempts}),
                );
            }
            AttemptResult::Failed { error, permanent } => {
                let error: String = error.chars().take(1000).collect();
                if permanent || attempts >= i64::from(self.tuning.max_attempts) {
                    tx.prepare_cached(
                        "UPDATE deliveries SET status = 'failed', attempts = ?2, last_error = ?3, next_attempt_at = NULL,
                         updated_at = ?4 WHERE id = ?1",
                    )?
                    .execute(params![id, attempts, error, at])?;
                    count(after, "failed", 1);
                    tracing::warn!(delivery = id, %url, attempts, %error, "webhook delivery given up");
                    after.event(
                        "NOTIFICATION_FAILED",
                        serde_json::json!({"delivery_id": id, "url": url, "event_type": event_type, "event_seq": event_seq,
                                           "attempts": attempts, "error": error}),
                    );
                } else {
                    let wait = self.tuning.backoff(attempts as u32);
                    tx.prepare_cached(
                        "UPDATE deliveries SET attempts = ?2, last_error = ?3, next_attempt_at = ?4, updated_at = ?5 WHERE id = ?1",
                    )?
                    .execute(params![id, attempts, error, now_ms() + wait.as_millis() as i64, at])?;
                    count(after, "retry", 1);
                    tracing::debug!(delivery = id, %url, attempts, %error, retry_in = ?wait, "webhook delivery failed; will retry");
                }
            }
        }
        Ok(())
    }

    fn add_rule(&mut self, tx: &Connection, new: NewWebhookRule) -> Result<Result<WebhookRule, ApiError>, ServiceError> {
        if let Err(e) = check_rule(&new) {
            return Ok(Err(e));
        }
        // Each type once: a list that names one many times is the same subscription.
        let mut events: Vec<String> = Vec::new();
        for e in new.events {
            if !events.contains(&e) {
                events.push(e);
            }
        }
        let rule = Rule {
            id: uuid::Uuid::now_v7().to_string(),
            url: new.url,
            events,
            secret: new.secret.filter(|s| !s.is_empty()),
            created_at: Some(crate::api::now_rfc3339()),
        };
        tx.prepare_cached("INSERT INTO rules (id, url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![
            rule.id,
            rule.url,
            serde_json::to_string(&rule.events).expect("strings serialize"),
            rule.secret,
            rule.created_at
        ])?;
        // Before the commit that answers it: see `Interest`.
        self.interest.add(&rule.events);
        let shown = rule.shown();
        self.rules.push(rule);
        Ok(Ok(shown))
    }

    fn remove_rule(&mut self, tx: &Connection, id: &str) -> Result<Result<WebhookRule, ApiError>, ServiceError> {
        if id.starts_with("config:") {
            return Ok(Err(ApiError::conflict(
                "config_rule",
                format!("{id} comes from [[notify.webhooks]] in agt.toml; change it there (or with `agt config set notify.webhooks`)"),
            )));
        }
        let Some(i) = self.rules.iter().position(|r| r.id == id) else {
            return Ok(Err(ApiError::not_found("notification rule", id)));
        };
        tx.prepare_cached("DELETE FROM rules WHERE id = ?1")?.execute([id])?;
        let removed = self.rules.remove(i);
        self.sweeps.push(Some(removed.id.clone()));
        self.interest.set(self.rules.iter().map(|r| r.events.as_slice()));
        Ok(Ok(removed.shown()))
    }

    fn list(&self, tx: &Connection, limit: usize, status: Option<String>) -> Result<Vec<Delivery>, ServiceError> {
        let mut stmt = tx.prepare_cached(
            "SELECT id, rule, url, event_type, event_seq, status, attempts, last_error, next_attempt_at,
                    created_at, updated_at, delivered_at
             FROM deliveries WHERE (?1 IS NULL OR status = ?1) ORDER BY n DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![status, limit.min(i64::MAX as usize) as i64], row_to_delivery)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl Service for Notify {
    type Cmd = Cmd;
    const NAME: &'static str = "notify";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    /// It follows the bus: nobody's answer waits for it (webhooks go out on their own time).
    fn background(_durability: crate::services::store::Durability) -> bool {
        true
    }
    /// Retries come due with time, not with a message: the tick answers a parked `Due`.
    const TICK: Option<Duration> = Some(Duration::from_millis(100));
    /// Events are gathered a few milliseconds per commit (a webhook goes out that much
    /// later).
    fn linger(&self) -> Option<Duration> {
        Some(Duration::from_millis(5))
    }

    fn deferrable(cmd: &Cmd) -> bool {
        matches!(cmd, Cmd::Event(_) | Cmd::Passed(_))
    }

    /// Stores how far the feed has been handled, with the deliveries it queued.
    fn before_commit(&mut self, tx: &Connection) -> Result<(), ServiceError> {
        if self.stored_event_seq != self.last_event_seq {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_event_seq'")?.execute([self.last_event_seq as i64])?;
            self.stored_event_seq = self.last_event_seq;
        }
        Ok(())
    }

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let mut last: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'last_event_seq'", [], |r| r.get(0))?;
        if last < 0 {
            // A new store starts at the bus's current end: a home that had events before
            // notify existed does not replay its whole history to the webhooks.
            last = ctx.bus.last_seq() as i64;
            conn.execute("UPDATE meta SET value = ?1 WHERE key = 'last_event_seq'", [last])?;
        }
        let mut stmt = conn.prepare("SELECT id, url, events, secret, created_at FROM rules ORDER BY created_at, id")?;
        let rules = stmt
            .query_map([], |r| {
                let events: String = r.get(2)?;
                Ok(Rule {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    secret: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let pending: i64 = conn.query_row("SELECT count(*) FROM deliveries WHERE status = 'pending'", [], |r| r.get(0))?;
        if pending > 0 {
            tracing::info!(pending, "notify: resuming pending webhook deliveries");
        }
        let pending_urls = conn
            .prepare("SELECT DISTINCT url FROM deliveries WHERE status = 'pending'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        ctx.notify_interest.set(rules.iter().map(|r| r.events.as_slice()));
        Ok(Notify {
            last_event_seq: last as u64,
            stored_event_seq: last as u64,
            rules,
            settings: ctx.settings.clone(),
            interest: ctx.notify_interest.clone(),
            tuning: ctx.notify_tuning,
            in_flight: HashMap::new(),
            sender_known: false,
            pending_urls,
            parked: None,
            last_prune: Instant::now(),
            config_urls: None,
            sweeps: Vec::new(),
            fault: if ctx.settings.get().debug.fault_injection { OutcomeFault::from_env() } else { None },
        })
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Event(handed) => {
                if handed.is_next(self.last_event_seq) {
                    let e = &handed.event;
                    let queued = self.enqueue(tx, e)?;
                    self.last_event_seq = e.seq;
                    if queued > 0 {
                        self.wake_sender(tx, after)?;
                    }
                }
            }
            Cmd::LastEventSeq(reply) => after.reply(reply, Ok(self.last_event_seq)),
            Cmd::Passed(passed) => {
                if passed.is_next(self.last_event_seq) {
                    self.last_event_seq = passed.seq;
                }
            }
            Cmd::List { limit, status, reply } => {
                let list = self.list(tx, limit, status)?;
                after.reply(reply, Ok(list));
            }
            Cmd::Due { max, sending, reported, reply } => {
                self.in_flight = sending.into_iter().collect();
                // Before anything is handed out: one whose outcome a crash took is settled
                // (or waits out its backoff), not posted again.
                for outcome in reported {
                    self.record(tx, outcome, after)?;
                }
                self.sender_known = true;
                // The parked request this replaces, if any, was the sender's last: it has
                // stopped waiting for it.
                self.parked = None;
                let due = if max == 0 { Vec::new() } else { self.due(tx, max, after)? };
                if due.is_empty() && max > 0 {
                    self.parked = Some((max, reply));
                } else {
                    after.reply(reply, Ok(due));
                }
            }
            Cmd::Outcome(outcome) => {
                self.record(tx, outcome, after)?;
                OutcomeFault::tick(&mut self.fault);
                // The slot it frees may be its URL's only way on: left to the next tick, a
                // receiver that answered at once still got two deliveries per 100 ms, and a
                // backlog at more than 20 events/s never drained.
                self.wake_sender(tx, after)?;
            }
            Cmd::AddRule { rule, reply } => {
                let result = self.add_rule(tx, rule)?;
                after.reply(reply, result);
            }
            Cmd::Rules(reply) => after.reply(reply, Ok(self.all_rules().iter().map(Rule::shown).collect())),
            Cmd::RemoveRule { id, reply } => {
                let result = self.remove_rule(tx, &id)?;
                after.reply(reply, result);
            }
        }
        Ok(())
    }

    fn tick(&mut self, tx: &Connection, after: &mut AfterCommit) -> Result<(), ServiceError> {
        self.sweep(tx, GIVE_UP_PER_CALL, after)?;
        self.wake_sender(tx, after)?;
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            tx.prepare_cached(
                "DELETE FROM deliveries WHERE status != 'pending' AND n < (
                     SELECT n FROM deliveries WHERE status != 'pending' ORDER BY n DESC LIMIT 1 OFFSET ?1)",
            )?
            .execute([KEEP_FINISHED])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Event;
    use crate::services::bus::BusEvent;

    /// A notify actor on a temporary store, driven by hand (no thread, no bus).
    struct Fixture {
        _dir: tempfile::TempDir,
        conn: rusqlite::Connection,
        svc: Notify,
    }

    fn fixture(webhooks: &str, tuning: Tuning) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::services::store::open(&dir.path().join("notify.db"), Default::default(), MIGRATIONS).unwrap();
        let file = dir.path().join("agt.toml");
        std::fs::write(&file, webhooks).unwrap();
        let settings = crate::services::config::settings::Settings::load(&file, &|_: &str| None).unwrap();
        let svc = Notify {
            last_event_seq: 0,
            stored_event_seq: 0,
            rules: Vec::new(),
            settings: SharedSettings::new(settings),
            interest: Default::default(),
            tuning,
            in_flight: HashMap::new(),
            sender_known: true,
            pending_urls: HashSet::new(),
            parked: None,
            last_prune: Instant::now(),
            config_urls: None,
            sweeps: Vec::new(),
            fault: None,
        };
        Fixture { _dir: dir, conn, svc }
    }

    impl Fixture {
        fn run(&mut self, cmd: Cmd) -> AfterCommit {
            let mut after = AfterCommit::new("notify");
            let tx = self.conn.transaction().unwrap();
            self.svc.handle(&tx, cmd, &mut after).unwrap();
            self.svc.before_commit(&tx).unwrap();
            tx.commit().unwrap();
            after
        }
        /// Reports an attempt's outcome as the sender does: against the attempts the
        /// delivery had when it was handed out (as it has them now).
        fn outcome(&mut self, id: String, result: AttemptResult) -> AfterCommit {
            let attempts: i64 =
                self.conn.query_row("SELECT attempts FROM deliveries WHERE id = ?1", [&id], |r| r.get(0)).optional().unwrap().unwrap_or(0);
            self.run(Cmd::Outcome(Outcome { id, attempts: attempts as u32, result }))
        }
        /// `n` pending deliveries (`backlog-1`, …) of event `seq` to `url` for `rule`.
        fn backlog(&self, rule: &str, url: &str, seq: i64, n: i64) {
            self.conn
                .execute(
                    "INSERT INTO deliveries (id, rule, url, event_seq, event_type, payload, status, attempts, next_attempt_at,
                                             created_at, updated_at)
                     WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?4)
                     SELECT 'backlog-' || i, ?1, ?2, ?3, 'USER_CREATED', '{}', 'pending', 0, 0, 'now', 'now' FROM k",
                    params![rule, url, seq, n],
                )
                .unwrap();
        }
        /// What `f` costs in SQLite's virtual machine steps: counted, not timed (reading a
        /// backlog is ~10 steps a row; a look through an index, a few hundred in all).
        fn steps<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> (T, u64) {
            use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
            let steps = std::sync::Arc::new(AtomicU64::new(0));
            let counter = steps.clone();
            self.conn.progress_handler(
                100,
                Some(move || {
                    counter.fetch_add(100, Relaxed);
                    false
                }),
            );
            let out = f(self);
            self.conn.progress_handler(100, None::<fn() -> bool>);
            (out, steps.load(Relaxed))
        }
        /// Runs `f` inside a committed transaction (for the parts whose answers go through
        /// `AfterCommit`, which only a running actor releases).
        fn with_tx<T>(&mut self, f: impl FnOnce(&mut Notify, &Connection) -> T) -> T {
            let tx = self.conn.transaction().unwrap();
            let out = f(&mut self.svc, &tx);
            tx.commit().unwrap();
            out
        }
        fn event(&mut self, seq: u64, kind: &str) {
            let event = Event {
                seq,
                event_id: format!("e{seq}"),
                kind: kind.into(),
                source: "t".into(),
                timestamp: "now".into(),
                data: serde_json::json!({}),
            };
            let after = self.svc.last_event_seq;
            self.run(Cmd::Event(crate::daemon::follower::Handed { after, event: std::sync::Arc::new(BusEvent::from_event(event)) }));
        }
        fn deliveries(&mut self) -> Vec<Delivery> {
            let tx = self.conn.transaction().unwrap();
            self.svc.list(&tx, 100, None).unwrap()
        }
        fn due(&mut self) -> Vec<Attempt> {
            let tx = self.conn.transaction().unwrap();
            let due = self.svc.due(&tx, 16, &mut AfterCommit::new("notify")).unwrap();
            tx.commit().unwrap();
            due
        }
    }

    const HOOK: &str = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"USER_CREATED\"]\nsecret = \"s\"\n";

    #[test]
    fn a_matching_event_queues_one_delivery_once() {
        let mut f = fixture(HOOK, Tuning::default());
        f.event(1, "USER_CREATED");
        f.event(1, "USER_CREATED"); // a replay
        f.event(2, "TRADE_EXECUTED");
        let d = f.deliveries();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].event_seq, d[0].status.as_str(), d[0].attempts, d[0].rule.as_str()), (1, "pending", 0, "config:0"));
        let due = f.due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].secret.as_deref(), Some("s"));
        assert!(due[0].payload.contains("USER_CREATED"));
        assert!(f.due().is_empty(), "a delivery with the sender is not handed out twice");
    }

    /// A config webhook and a run-time rule naming the same URL are two subscriptions:
    /// each gets its own delivery, signed with its own secret, and removing one gives up
    /// only its own.
    #[test]
    fn a_rule_and_a_webhook_on_one_url_each_get_their_own_signed_delivery() {
        let mut f = fixture(HOOK, Tuning { backoff_base: Duration::ZERO, ..Tuning::default() });
        let rule = NewWebhookRule { url: "http://127.0.0.1:9/hook".into(), events: vec!["*".into()], secret: Some("r".into()) };
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule).unwrap()).unwrap();
        f.event(1, "USER_CREATED");
        let mut due: Vec<(String, Option<String>)> = f.due().into_iter().map(|a| (a.id, a.secret)).collect();
        due.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(due.iter().map(|d| d.1.as_deref()).collect::<Vec<_>>(), [Some("r"), Some("s")], "one each, its own key");
        let rules: Vec<String> = f.deliveries().into_iter().map(|d| d.rule).collect();
        assert!(rules.contains(&"config:0".to_string()) && rules.contains(&added.id), "{rules:?}");
        for (id, _) in due {
            f.outcome(id, AttemptResult::Failed { error: "HTTP 500".into(), permanent: false });
        }
        // The config's webhook goes: its pending delivery is given up, the rule's is not.
        f.svc.settings.replace(Default::default());
        let due = f.due();
        assert_eq!(due.iter().map(|a| a.secret.as_deref()).collect::<Vec<_>>(), [Some("r")]);
        let d = f.deliveries();
        let config = d.iter().find(|d| d.rule == "config:0").unwrap();
        assert_eq!(
            (config.status.as_str(), config.last_error.as_deref()),
            ("failed", Some("its webhook was removed before it was delivered"))
        );
        assert_eq!(d.iter().find(|d| d.rule == added.id).unwrap().status, "pending");
    }

    /// A removed webhook's backlog is given up at once, not a page per `Due`: the other
    /// webhooks' deliveries behind it go out at the next `Due`. The two it had with the
    /// sender are left for their outcomes.
    #[test]
    fn a_removed_webhooks_backlog_does_not_hold_up_the_others() {
        let mut f = fixture(HOOK, Tuning::default());
        let rule = NewWebhookRule { url: "http://127.0.0.1:9/gone".into(), events: vec!["*".into()], secret: None };
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule).unwrap()).unwrap();
        for seq in 1..=50 {
            f.event(seq, "ORDER_CREATED");
        }
        let sending = f.due();
        assert_eq!(sending.len(), MAX_IN_FLIGHT_PER_URL, "the removed rule's two oldest are with the sender");
        f.event(51, "USER_CREATED");
        f.with_tx(|s, tx| s.remove_rule(tx, &added.id).unwrap()).unwrap();
        let due = f.due();
        assert_eq!(due.iter().map(|a| a.url.as_str()).collect::<Vec<_>>(), ["http://127.0.0.1:9/hook"], "the config's delivery at once");
        let d = f.deliveries();
        let failed = d.iter().filter(|d| d.rule == added.id && d.status == "failed").count();
        assert_eq!(failed, 50 - MAX_IN_FLIGHT_PER_URL + 1, "all the rest of the backlog is given up in one go");
        assert!(d
            .iter()
            .filter(|d| d.status == "failed")
            .all(|d| d.last_error.as_deref() == Some("its webhook was removed before it was delivered")));
        f.outcome(sending[0].id.clone(), AttemptResult::Delivered);
        let d = f.deliveries();
        assert_eq!(
            d.iter().find(|d| d.id == sending[0].id).map(|d| d.status.as_str()),
            Some("sent"),
            "one with the sender is its outcome's"
        );
        assert_eq!(d.iter().find(|d| d.id == sending[1].id).map(|d| d.status.as_str()), Some("pending"));
    }

    /// A restart of notify alone leaves the sender's attempts running. The new actor
    /// takes what the sender says it is attempting: a removed rule's delivery being
    /// attempted is left to its outcome, not given up as the removal or the look that
    /// finds its rule gone comes (it was given up, then delivered), and a URL at its cap
    /// gets no more (a hanging receiver held two more slots after each restart).
    #[test]
    fn a_restart_of_notify_keeps_the_senders_attempts_in_flight() {
        let mut f = fixture(HOOK, Tuning::default());
        let rule = NewWebhookRule { url: "http://127.0.0.1:9/rule".into(), events: vec!["*".into()], secret: None };
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule).unwrap()).unwrap();
        for seq in 1..=3 {
            f.event(seq, "USER_CREATED");
        }
        let sending = f.due();
        assert_eq!(sending.len(), 2 * MAX_IN_FLIGHT_PER_URL, "two for the config's URL, two for the rule's");
        // What a start leaves of the actor's memory (`Notify::load`); then the rule goes.
        f.svc.in_flight.clear();
        f.svc.sender_known = false;
        f.svc.config_urls = None;
        f.with_tx(|s, tx| s.remove_rule(tx, &added.id).unwrap()).unwrap();
        f.with_tx(|s, tx| s.tick(tx, &mut AfterCommit::new("notify")).unwrap());
        assert!(f.due().is_empty(), "nothing is handed out before the sender says what it has");
        assert!(f.deliveries().iter().all(|d| d.status == "pending"), "nor given up");
        let (reply, _rx) = tokio::sync::oneshot::channel();
        let listed = sending.iter().map(|a| (a.id.clone(), a.url.clone())).collect();
        f.run(Cmd::Due { max: 16, sending: listed, reported: Vec::new(), reply });
        assert!(f.svc.parked.is_some(), "the config's URL is at its cap: the request waits");
        let d = f.deliveries();
        let of_rule = |status: &str| d.iter().filter(|d| d.rule == added.id && d.status == status).count();
        assert_eq!((of_rule("failed"), of_rule("pending")), (1, MAX_IN_FLIGHT_PER_URL), "only the one not being attempted is given up");
        let rules_attempt = sending.iter().find(|a| a.url.ends_with("/rule")).unwrap().id.clone();
        f.outcome(rules_attempt.clone(), AttemptResult::Delivered);
        assert_eq!(f.deliveries().iter().find(|d| d.id == rules_attempt).map(|d| d.status.clone()).as_deref(), Some("sent"));
    }

    /// A receiver with a backlog gets [`MAX_IN_FLIGHT_PER_URL`] deliveries with the sender
    /// at a time, so another receiver's newer delivery goes out beside them.
    #[test]
    fn one_url_never_takes_more_than_its_share_of_the_sender() {
        let two = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/slow\"\nevents = [\"USER_CREATED\"]\n\n\
                   [[notify.webhooks]]\nurl = \"http://127.0.0.1:9/fast\"\nevents = [\"TRADE_EXECUTED\"]\n";
        let mut f = fixture(two, Tuning::default());
        for seq in 1..=20 {
            f.event(seq, "USER_CREATED");
        }
        f.event(21, "TRADE_EXECUTED");
        f.event(22, "TRADE_EXECUTED");
        f.event(23, "TRADE_EXECUTED");
        let urls = |due: &[Attempt]| due.iter().map(|a| a.url.rsplit('/').next().unwrap().to_string()).collect::<Vec<_>>();
        let first = f.due();
        assert_eq!(urls(&first), ["slow", "slow", "fast", "fast"], "oldest first, two per URL");
        assert!(f.due().is_empty(), "both URLs are at their cap");
        let done = first.iter().find(|a| a.url.ends_with("fast")).unwrap().id.clone();
        f.outcome(done, AttemptResult::Delivered);
        assert_eq!(urls(&f.due()), ["fast"], "a freed slot of one URL goes to that URL's next");
        let done = first.iter().find(|a| a.url.ends_with("slow")).unwrap().id.clone();
        f.outcome(done, AttemptResult::Delivered);
        let next = f.due();
        assert_eq!(urls(&next), ["slow"]);
        assert_eq!(Some(next[0].id.clone()), f.deliveries().into_iter().find(|d| d.event_seq == 3).map(|d| d.id), "the next oldest");
    }

    /// A receiver at its cap with a large backlog (a dead one, after a while) costs `due`
    /// a probe, not a read of its whole backlog: `due` runs for every batch of events that
    /// queues a delivery and at every tick, and reading 130,000 rows each time made
    /// notify fall minutes behind its feed, holding up every other webhook.
    #[test]
    fn a_capped_receivers_backlog_is_not_read_at_every_due() {
        let two = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/dead\"\nevents = [\"USER_CREATED\"]\n\n\
                   [[notify.webhooks]]\nurl = \"http://127.0.0.1:9/live\"\nevents = [\"TRADE_EXECUTED\"]\n";
        let mut f = fixture(two, Tuning::default());
        f.event(1, "USER_CREATED");
        f.event(2, "USER_CREATED");
        assert_eq!(f.due().len(), MAX_IN_FLIGHT_PER_URL, "the dead receiver's two are with the sender");
        f.backlog("config:0", "http://127.0.0.1:9/dead", 2, 100_000);
        let (due, steps) = f.steps(|f| f.due());
        assert!(due.is_empty(), "the dead receiver is at its cap and the live one has nothing");
        assert!(steps < 20_000, "one look at a capped backlog of 100,000 took {steps} steps");
        f.event(3, "TRADE_EXECUTED");
        assert_eq!(f.due().iter().map(|a| a.url.as_str()).collect::<Vec<_>>(), ["http://127.0.0.1:9/live"]);
    }

    /// Removing a rule reads that rule's deliveries, not every pending one: beside a
    /// dead receiver's backlog of 130,000, one `DELETE` of a rule took ~0.3 s of notify's
    /// thread. Its pending deliveries are still all given up at once.
    #[test]
    fn removing_a_rule_reads_only_its_own_deliveries() {
        let mut f = fixture(HOOK, Tuning::default());
        let rule = NewWebhookRule { url: "http://127.0.0.1:9/rule".into(), events: vec!["ORDER_CREATED".into()], secret: None };
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule).unwrap()).unwrap();
        for seq in 1..=3 {
            f.event(seq, "ORDER_CREATED");
        }
        assert_eq!(f.with_tx(|s, tx| s.sweep(tx, GIVE_UP_PER_CALL, &mut AfterCommit::new("notify")).unwrap()), 0, "nothing removed yet");
        f.backlog("config:0", "http://127.0.0.1:9/hook", 4, 100_000);
        f.svc.pending_urls.insert("http://127.0.0.1:9/hook".into());
        let (given_up, steps) = f.steps(|f| {
            f.with_tx(|s, tx| s.remove_rule(tx, &added.id).unwrap()).unwrap();
            f.with_tx(|s, tx| s.sweep(tx, GIVE_UP_PER_CALL, &mut AfterCommit::new("notify")).unwrap())
        });
        assert_eq!(given_up, 3, "the rule's pending deliveries, all at once");
        assert!(steps < 20_000, "removing a rule beside a backlog of 100,000 took {steps} steps");
        let pending: i64 = f.conn.query_row("SELECT count(*) FROM deliveries WHERE status = 'pending'", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 100_000, "the config webhook's backlog is untouched");
    }

    /// A config webhook's removal reads its own deliveries at its URL, not a run-time
    /// rule's there: through `deliveries_url_due` it read every pending delivery at the
    /// URL, a rule's backlog of 100,000 included, each time the config changed.
    #[test]
    fn removing_a_config_webhook_reads_only_its_own_deliveries() {
        let mut f = fixture(HOOK, Tuning::default());
        let rule = NewWebhookRule { url: "http://127.0.0.1:9/hook".into(), events: vec!["ORDER_CREATED".into()], secret: None };
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule).unwrap()).unwrap();
        for seq in 1..=3 {
            f.event(seq, "USER_CREATED");
        }
        assert_eq!(f.with_tx(|s, tx| s.sweep(tx, GIVE_UP_PER_CALL, &mut AfterCommit::new("notify")).unwrap()), 0, "nothing removed yet");
        f.backlog(&added.id, "http://127.0.0.1:9/hook", 4, 100_000);
        let (given_up, steps) = f.steps(|f| {
            f.svc.settings.replace(Default::default());
            f.with_tx(|s, tx| s.sweep(tx, GIVE_UP_PER_CALL, &mut AfterCommit::new("notify")).unwrap())
        });
        assert_eq!(given_up, 3, "the config webhook's pending deliveries, all at once");
        assert!(steps < 20_000, "removing a config webhook beside a backlog of 100,000 at its URL took {steps} steps");
        let pending: i64 = f.conn.query_row("SELECT count(*) FROM deliveries WHERE status = 'pending'", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 100_000, "the rule's backlog at the same URL is untouched");
    }

    /// An outcome lives in notify's open transaction until its batch commits; a crash in
    /// between lost it, and the restarted notify handed the delivery out again (a second
    /// post). The sender reports it again in its next `Due`: recorded before anything is
    /// handed out, and a no-op when it was committed after all.
    #[test]
    fn an_outcome_reported_again_is_recorded_once() {
        let tuning = Tuning { backoff_base: Duration::ZERO, ..Tuning::default() };
        let mut f = fixture(HOOK, tuning);
        f.event(1, "USER_CREATED");
        f.event(2, "USER_CREATED");
        let sent = f.due();
        assert_eq!(sent.len(), 2);
        let report = |a: &Attempt, result| Outcome { id: a.id.clone(), attempts: a.attempts, result };
        let failed = AttemptResult::Failed { error: "HTTP 500".into(), permanent: false };
        // The first's outcome was committed; the second's went with a crash.
        f.run(Cmd::Outcome(report(&sent[0], failed.clone())));
        f.svc.in_flight.clear();
        f.svc.sender_known = false;
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        let reported = vec![report(&sent[0], failed.clone()), report(&sent[1], AttemptResult::Delivered)];
        f.run(Cmd::Due { max: 16, sending: Vec::new(), reported, reply }).send_replies();
        let d = f.deliveries();
        let of = |a: &Attempt| d.iter().find(|d| d.id == a.id).map(|d| (d.status.clone(), d.attempts)).unwrap();
        assert_eq!(of(&sent[0]), ("pending".into(), 1), "a retry reported twice is one attempt");
        assert_eq!(of(&sent[1]), ("sent".into(), 1), "the lost outcome is recorded");
        let handed: Vec<String> = rx.try_recv().expect("answered").unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(handed, [sent[0].id.clone()], "the retry is due again; the delivered one is not handed out");
        // All slots busy: a `Due` for none is answered at once, with nothing.
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        f.run(Cmd::Due { max: 0, sending: Vec::new(), reported: Vec::new(), reply }).send_replies();
        assert!(f.svc.parked.is_none() && f.svc.sender_known);
        assert!(rx.try_recv().expect("answered").unwrap().is_empty());
    }

    /// A `Due` carries earlier outcomes again while the same delivery's retry is out with
    /// the sender: the stale report must leave that attempt in flight, or the retry is
    /// handed out a second time at once (a receiver that failed twice then answered 200
    /// got a fourth post).
    #[test]
    fn an_outcome_reported_again_leaves_the_retry_in_flight() {
        let tuning = Tuning { backoff_base: Duration::ZERO, ..Tuning::default() };
        let mut f = fixture(HOOK, tuning);
        f.event(1, "USER_CREATED");
        let first = f.due().pop().expect("due");
        let failed = AttemptResult::Failed { error: "HTTP 500".into(), permanent: false };
        f.run(Cmd::Outcome(Outcome { id: first.id.clone(), attempts: first.attempts, result: failed.clone() }));
        let retry = f.due().pop().expect("the retry");
        assert_eq!((retry.id.as_str(), retry.attempts), (first.id.as_str(), 1));
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        let reported = vec![Outcome { id: first.id.clone(), attempts: first.attempts, result: failed }];
        let sending = vec![(retry.id.clone(), retry.url.clone())];
        f.run(Cmd::Due { max: 16, sending, reported, reply }).send_replies();
        assert!(f.svc.in_flight.contains_key(&retry.id), "the retry is still out");
        assert!(rx.try_recv().is_err(), "nothing to hand out: the request waits");
        let d = f.deliveries();
        assert_eq!((d[0].status.as_str(), d[0].attempts), ("pending", 1), "the stale report counted nothing");
    }

    #[test]
    fn failed_attempts_back_off_then_a_success_settles_it() {
        let tuning = Tuning { backoff_base: Duration::from_millis(1), ..Tuning::default() };
        let mut f = fixture(HOOK, tuning);
        f.event(1, "USER_CREATED");
        for n in 1..=2 {
            let a = f.due().pop().expect("due");
            assert_eq!(a.attempts, n - 1);
            f.outcome(a.id, AttemptResult::Failed { error: "HTTP 500".into(), permanent: false });
            std::thread::sleep(Duration::from_millis(5));
        }
        let a = f.due().pop().expect("due again");
        let after = f.outcome(a.id.clone(), AttemptResult::Delivered);
        assert!(!after.is_empty(), "NOTIFICATION_SENT is published");
        // A duplicate report (after a restart) changes nothing.
        f.outcome(a.id, AttemptResult::Failed { error: "late".into(), permanent: false });
        let d = &f.deliveries()[0];
        assert_eq!((d.status.as_str(), d.attempts), ("sent", 3));
        assert_eq!(d.last_error, None, "a sent delivery has no error; its attempts say it was retried");
        assert!(d.delivered_at.is_some());
        assert!(f.due().is_empty());
    }

    #[test]
    fn the_last_attempt_or_a_permanent_error_fails_the_delivery() {
        let tuning = Tuning { backoff_base: Duration::from_millis(1), max_attempts: 2, ..Tuning::default() };
        let mut f = fixture(HOOK, tuning);
        f.event(1, "USER_CREATED");
        f.event(2, "USER_CREATED");
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(5));
            for a in f.due() {
                let permanent = a.attempts == 0 && f.deliveries().iter().any(|d| d.id == a.id && d.event_seq == 2);
                f.outcome(a.id, AttemptResult::Failed { error: "refused".into(), permanent });
            }
        }
        let d = f.deliveries();
        assert!(d.iter().all(|d| d.status == "failed"), "{d:?}");
        assert_eq!(d.iter().map(|d| d.attempts).collect::<Vec<_>>(), [1, 2], "newest first: the permanent one stopped at once");
    }

    #[test]
    fn a_parked_due_is_answered_by_a_new_delivery() {
        let mut f = fixture(HOOK, Tuning::default());
        let (reply, _rx) = tokio::sync::oneshot::channel();
        f.run(Cmd::Due { max: 4, sending: Vec::new(), reported: Vec::new(), reply });
        assert!(f.svc.parked.is_some(), "nothing due: the request waits");
        f.event(1, "USER_CREATED");
        assert!(f.svc.parked.is_none(), "the new delivery answered it");
        assert_eq!(f.svc.in_flight.len(), 1);
    }

    /// An outcome frees its URL's slot at once: the sender's parked `Due` gets that URL's
    /// next delivery then, not at the next tick.
    #[test]
    fn an_outcome_hands_the_url_its_next_delivery_at_once() {
        let mut f = fixture(HOOK, Tuning::default());
        for seq in 1..=3 {
            f.event(seq, "USER_CREATED");
        }
        let first = f.due();
        assert_eq!(first.len(), MAX_IN_FLIGHT_PER_URL);
        let (reply, _rx) = tokio::sync::oneshot::channel();
        let sending = first.iter().map(|a| (a.id.clone(), a.url.clone())).collect();
        f.run(Cmd::Due { max: 16, sending, reported: Vec::new(), reply });
        assert!(f.svc.parked.is_some(), "the URL is at its cap: the request waits");
        f.outcome(first[0].id.clone(), AttemptResult::Delivered);
        assert!(f.svc.parked.is_none(), "the freed slot answered it");
        assert_eq!(f.svc.in_flight.len(), MAX_IN_FLIGHT_PER_URL);
    }

    #[test]
    fn run_time_rules_are_checked_listed_and_removed() {
        let mut f = fixture("", Tuning::default());
        let rule = |url: &str, events: &[&str], secret: Option<&str>| NewWebhookRule {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: secret.map(Into::into),
        };
        let bad = f.with_tx(|s, tx| s.add_rule(tx, rule("https://x/", &["*"], None)).unwrap());
        assert_eq!(bad.unwrap_err().code, "invalid_url");
        let bad = f.with_tx(|s, tx| s.add_rule(tx, rule("http://x/", &["NOPE"], None)).unwrap());
        assert_eq!(bad.unwrap_err().code, "invalid_events");
        let feed_wants = f.svc.interest.clone().feed_wants(SharedSettings::new(Default::default()));
        assert!(!feed_wants("ORDER_CREATED"), "a refused rule wants nothing");
        let added = f.with_tx(|s, tx| s.add_rule(tx, rule("http://x/", &["*"], Some("k"))).unwrap()).unwrap();
        assert_eq!(added.secret.as_deref(), Some(MASKED_SECRET));
        assert!(feed_wants("ORDER_CREATED"), "the feed hands notify what the new rule wants");
        f.event(1, "ORDER_CREATED");
        f.event(2, "NOTIFICATION_SENT");
        assert_eq!(f.deliveries().len(), 1, "\"*\" leaves NOTIFICATION_* out");
        assert_eq!(f.due()[0].secret.as_deref(), Some("k"));
        let config = f.with_tx(|s, tx| s.remove_rule(tx, "config:0").unwrap());
        assert_eq!(config.unwrap_err().code, "config_rule");
        let removed = f.with_tx(|s, tx| s.remove_rule(tx, &added.id).unwrap()).unwrap();
        assert_eq!(removed.id, added.id);
        assert!(f.svc.all_rules().is_empty());
        assert!(!feed_wants("ORDER_CREATED"), "nor after it is removed");
        // What the feed skipped moves notify's position, as an event would.
        f.run(Cmd::Passed(crate::daemon::follower::Passed { after: 2, seq: 9 }));
        assert_eq!(f.svc.last_event_seq, 9);
        f.run(Cmd::Passed(crate::daemon::follower::Passed { after: 12, seq: 15 }));
        assert_eq!(f.svc.last_event_seq, 9, "after a gap: ignored");
    }

    #[test]
    fn load_starts_a_new_store_at_the_bus_end_and_keeps_rules_and_pending_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, mut ctx) = ServiceCtx::for_tests(dir.path());
        let home = ctx.home.clone();
        bus.publish("USER_CREATED", "users", serde_json::json!({}));
        while bus.last_seq() < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let file = dir.path().join("agt.toml");
        std::fs::write(&file, HOOK).unwrap();
        let settings = crate::services::config::settings::Settings::load(&file, &|_: &str| None).unwrap();
        ctx.settings = SharedSettings::new(settings);
        let mut conn = crate::services::store::open(&home.store("notify"), Default::default(), MIGRATIONS).unwrap();
        let mut svc = Notify::load(&conn, &ctx).unwrap();
        assert_eq!(svc.last_event_seq, 1, "history before notify existed is not replayed");
        let tx = conn.transaction().unwrap();
        svc.add_rule(&tx, NewWebhookRule { url: "http://x/".into(), events: vec!["*".into()], secret: None }).unwrap().unwrap();
        let event = Event {
            seq: 2,
            event_id: "e".into(),
            kind: "USER_CREATED".into(),
            source: "t".into(),
            timestamp: "now".into(),
            data: serde_json::json!({}),
        };
        let handed = crate::daemon::follower::Handed { after: 1, event: std::sync::Arc::new(BusEvent::from_event(event)) };
        svc.handle(&tx, Cmd::Event(handed), &mut AfterCommit::new("notify")).unwrap();
        assert!(svc.due(&tx, 16, &mut AfterCommit::new("notify")).unwrap().is_empty(), "nothing before the sender says what it has");
        let (reply, _rx) = tokio::sync::oneshot::channel();
        svc.handle(&tx, Cmd::Due { max: 16, sending: Vec::new(), reported: Vec::new(), reply }, &mut AfterCommit::new("notify")).unwrap();
        assert_eq!(svc.in_flight.len(), 2, "one per url, both now with the sender");
        svc.before_commit(&tx).unwrap();
        tx.commit().unwrap();
        // A SIGKILL: the sender went with it, so its first `Due` lists nothing, and what
        // was with the old one is due again.
        let mut svc = Notify::load(&conn, &ctx).unwrap();
        assert_eq!((svc.last_event_seq, svc.rules.len()), (2, 1));
        let tx = conn.transaction().unwrap();
        let (reply, _rx) = tokio::sync::oneshot::channel();
        svc.handle(&tx, Cmd::Due { max: 16, sending: Vec::new(), reported: Vec::new(), reply }, &mut AfterCommit::new("notify")).unwrap();
        assert_eq!(svc.in_flight.len(), 2);
        drop(tx);
        bus.shutdown();
    }
}
