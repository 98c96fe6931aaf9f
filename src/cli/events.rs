//! `agt events tail [--since SEQ] [--type T[,T]] [-f]`: the event stream.
//!
//! Without `--since` it shows the last 20 events (and with `-f` then follows from the
//! newest); with `--since` it shows every event after that sequence number. `-o json`
//! prints NDJSON: each event exactly as the daemon sent it, one per line.

use super::output::{clean, field};
use super::{CliError, CliResult, Ctx};
use crate::client::{with_query, ClientError, Delivery};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::ops::ControlFlow;

/// How many events `events tail` shows when not told where to start.
const TAIL: usize = 20;

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Show recent events, or follow them live with -f
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start after this sequence number (0 = from the beginning)
    #[arg(long, value_name = "SEQ", allow_negative_numbers = true, value_parser = super::whole_in::<u64>("a sequence number", 0, None))]
    pub since: Option<u64>,
    /// Only these event types, e.g. ORDER_CREATED,TRADE_EXECUTED
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Keep streaming new events until interrupted
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Ctx, cmd: EventsCmd) -> CliResult {
    let EventsCmd::Tail(args) = cmd;
    // Sent empty (`--type ""`, or `A,,B`), the daemon would read no type as every type.
    for t in &args.types {
        super::named(t, "--type", "an event type, e.g. ORDER_CREATED, or leave --type out for every type")?;
    }
    let types = (!args.types.is_empty()).then(|| args.types.join(","));
    // Where to start: after `--since`, or the last TAIL events (the daemon finds them,
    // so a long event log is not streamed only to keep its end).
    let start = match args.since {
        Some(s) => ("since", s.to_string()),
        None => ("tail", TAIL.to_string()),
    };
    let path = with_query(
        "/api/events",
        &[(start.0, Some(start.1)), ("type", types.clone()), ("follow", args.follow.then(|| "true".to_string()))],
    );
    let client = ctx.client()?;
    if !ctx.json() && !ctx.quiet() && args.follow {
        eprintln!("following events; Ctrl-C to stop");
    }
    let mut shown = 0usize;
    let mut last = args.since;
    let streamed = client.for_each_line(&path, |line| {
        if let Some(seq) = print(ctx, line) {
            last = Some(seq);
        }
        shown += 1;
        ControlFlow::Continue(())
    });
    let resume = Resume { last, types: types.as_deref(), follow: args.follow };
    // A followed stream shows the events its start was behind as they reach the bus, and
    // a stream that broke off says how to resume: neither is a read to warn about.
    if args.follow || streamed.is_err() {
        client.client().staleness().take();
    }
    match streamed {
        // A stream that broke off (the daemon cuts one it cannot go on with: events
        // pruned past it, its token revoked; or the daemon died) is asked about below,
        // followed or not: a read cut short must not pass for the whole of it.
        // (A stream that showed anything was sent, so only a lost answer can break it.)
        Err(ClientError::Unreachable { delivery: Delivery::AnswerLost, .. }) => return Err(why_the_stream_ended(ctx, &resume)),
        other => other?,
    }
    if shown == 0 && !args.follow && args.since.is_none() && !ctx.json() {
        ctx.say("no events");
    }
    if args.follow {
        return Err(why_the_stream_ended(ctx, &resume));
    }
    Ok(())
}

/// Where a stream that ended got to, for the command that goes on from there.
struct Resume<'a> {
    last: Option<u64>,
    types: Option<&'a str>,
    follow: bool,
}

impl Resume<'_> {
    /// `agt events tail [-f] [--since SEQ] [--type T]`: what was asked, after the last event shown.
    fn command(&self) -> String {
        let mut c = String::from("agt events tail");
        if self.follow {
            c.push_str(" -f");
        }
        if let Some(s) = self.last {
            c.push_str(&format!(" --since {s}"));
        }
        if let Some(t) = self.types {
            c.push_str(&format!(" --type {t}"));
        }
        c
    }
}

/// A stream has ended or broken off: the daemon stopped, or it ended the stream (the
/// token was revoked, the stream fell behind the events kept, the daemon restarted).
/// Asking the daemon again tells them apart: its refusal (401 for a revoked token, 410
/// for pruned events) is the answer (exit 1); nobody answering means it is not running
/// (exit 3). Either way the message says how to go on from the last event shown.
fn why_the_stream_ended(ctx: &Ctx, resume: &Resume) -> CliError {
    let probe = with_query("/api/events", &[("since", resume.last.map(|s| s.to_string())), ("limit", Some("0".into()))]);
    match ctx.client() {
        Err(e) => e,
        Ok(client) => {
            let said = client.get(&probe).map(drop);
            // The probe shows nothing, so a mark on it is not warned about either.
            client.client().staleness().take();
            what_the_probe_says(said, resume)
        }
    }
}

/// What the daemon's answer to [`why_the_stream_ended`]'s probe says about the stream.
/// A daemon that has begun to stop can still answer it (a connection it had queued
/// when it closed its listener), 503 "the daemon is stopping": that is a stop too, not
/// a refusal (it was told as an error, exit 1, without how to go on).
fn what_the_probe_says(probe: Result<(), ClientError>, resume: &Resume) -> CliError {
    let go_on = resume.command();
    match probe {
        Err(e @ ClientError::Unreachable { .. }) => CliError::NotRunning(format!(
            "the event stream broke off and the daemon does not answer ({e}); it stopped. Once it runs again, resume with `{go_on}`"
        )),
        Err(ClientError::Api(e)) if e.is_daemon_stopping() => {
            CliError::NotRunning(format!("the event stream ended as the daemon stopped. Once it runs again, resume with `{go_on}`"))
        }
        Err(e) => CliError::Client(e),
        Ok(()) if resume.follow => CliError::failed(
            "stream_ended",
            format!("the daemon ended the event stream (it restarted, or is shutting down); resume with `{go_on}`"),
        ),
        Ok(()) => CliError::failed("stream_ended", format!("the event stream broke off before its end; resume with `{go_on}`")),
    }
}

/// Prints one event line and returns its sequence number.
fn print(ctx: &Ctx, line: &str) -> Option<u64> {
    let v: Option<Value> = serde_json::from_str(line).ok();
    if !ctx.quiet() {
        if ctx.json() {
            println!("{line}");
        } else {
            match &v {
                Some(e) => println!("{}", event_line(e)),
                None => println!("{}", clean(line)),
            }
        }
    }
    v.and_then(|e| e.get("seq").and_then(Value::as_u64))
}

/// `seq  time  TYPE  source  data` in fixed columns, so a live stream stays aligned.
pub fn event_line(e: &Value) -> String {
    let data = e.get("data").map(|d| d.to_string()).unwrap_or_default();
    format!(
        "{:>7}  {:<27}  {:<21}  {:<8}  {}",
        field(e, "seq"),
        field(e, "timestamp"),
        field(e, "type"),
        field(e, "source"),
        clean(&shorten(&data, 160))
    )
}

pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    /// A followed stream's probe answered by a daemon on its way out is a stop (exit 3,
    /// with the command that goes on), as finding nobody there is; a service's 503 is
    /// still the daemon's error (exit 1).
    #[test]
    fn a_probe_answered_by_a_stopping_daemon_says_it_stopped_and_how_to_go_on() {
        let resume = Resume { last: Some(42), types: Some("USER_CREATED"), follow: true };
        let stopped = what_the_probe_says(Err(ClientError::Api(ApiError::daemon_stopping())), &resume);
        assert_eq!(stopped.exit_code(), 3, "{stopped}");
        assert!(stopped.to_string().contains("resume with `agt events tail -f --since 42 --type USER_CREATED`"), "{stopped}");
        let restarting = what_the_probe_says(Err(ClientError::Api(ApiError::unavailable("users"))), &resume);
        assert_eq!(restarting.exit_code(), 1, "{restarting}");
    }
}
