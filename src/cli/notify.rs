//! `agt notify list`: the webhook delivery log; `agt notify rules [list | add | remove]`:
//! the webhooks (the config's `[[notify.webhooks]]` and the rules added at run time).

use super::output::{cell, clean, field, items, kv, list_or_none, table_of, Table};
use super::{CliError, CliResult, Ctx, Cut};
use crate::client::encode;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::Read;

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Recent deliveries, newest first: webhook, event, result, attempts, and when a
    /// pending one is tried next
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// The webhooks and which events go to each (without a subcommand: list them)
    Rules {
        #[command(subcommand)]
        cmd: Option<RulesCmd>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Every webhook: the config's (`config:N`, changed with `agt config set
    /// notify.webhooks`) and the rules added at run time; secrets shown as ***
    #[command(visible_alias = "ls")]
    List,
    /// Add a webhook rule at run time: each later event of these types is posted to URL
    Add {
        /// Where to post, http://host[:port][/path]
        // Its own id: named `url`, clap would take it for the global --url (the daemon's).
        #[arg(id = "webhook_url", value_name = "URL")]
        url: String,
        /// The event types to post, e.g. ORDER_CREATED,TRADE_EXECUTED, or * for every
        /// event but NOTIFICATION_*
        #[arg(long, value_name = "TYPES", value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Sign each post with this key (X-Agt-Signature), at most 256 bytes; `-` reads it
        /// from standard input, which keeps it out of the process list and shell history
        #[arg(long)]
        secret: Option<String>,
    },
    /// Remove a run-time rule; its pending deliveries are given up
    #[command(visible_alias = "rm")]
    Remove {
        /// The rule's id (`agt notify rules` shows them); a config webhook (`config:N`) is
        /// removed with `agt config set notify.webhooks`
        id: String,
    },
}

/// The filters of `GET /api/notifications`, so a script need not fall back to the API to
/// find the failed deliveries among the last thousands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many, the newest [default: 100, at most 10000]; when there are
    /// more, a note on stderr says so
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = super::count_up_to(10_000))]
    pub limit: Option<u32>,
    /// Only deliveries in this state
    #[arg(long, value_parser = ["pending", "sent", "failed", "all"])]
    pub status: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: NotifyCmd) -> CliResult {
    match cmd {
        NotifyCmd::Rules { cmd } => rules(ctx, cmd.unwrap_or(RulesCmd::List)),
        NotifyCmd::List(args) => {
            let cut = Cut { noun: "deliveries".into(), which: "newest", default: 100, max: 10_000, keep_front: true };
            let listed = ctx.get_list("/api/notifications", &[("status", args.status)], args.limit, cut)?;
            ctx.show_list(&listed, |v| {
                let t = table_of(
                    &items(v),
                    &[
                        ("ID", "id|delivery_id"),
                        ("EVENT", "event_type|type|event"),
                        ("URL", "url|webhook"),
                        ("STATUS", "status|result|state"),
                        ("ATTEMPTS", "attempts"),
                        // A pending delivery's next try (`-` once sent or failed): a
                        // backlog behind a dead receiver waits up to 5 min a try, which
                        // the attempt count alone does not say.
                        ("NEXT ATTEMPT", "next_attempt_at"),
                        ("UPDATED", "updated_at|timestamp|created_at"),
                        ("ERROR", "last_error|error"),
                    ],
                );
                list_or_none(t, "no notifications")
            })
        }
    }
}

fn rules(ctx: &Ctx, cmd: RulesCmd) -> CliResult {
    match cmd {
        RulesCmd::List => {
            let v = ctx.get("/api/notifications/rules")?;
            ctx.show(&v, |v| list_or_none(rules_table(&items(v)), "no webhook rules"))
        }
        RulesCmd::Add { url, events, secret } => {
            super::named(&url, "URL", "a webhook URL, e.g. http://127.0.0.1:9000/hook")?;
            // Sent empty (`--events ""`, or `A,,B`), the daemon would be asked for a type named "".
            for t in &events {
                super::named(t, "--events", "event types, e.g. ORDER_CREATED,TRADE_EXECUTED, or * for every event")?;
            }
            let secret = match super::named_opt(secret, "--secret", "a signing key, or leave --secret out to post unsigned")? {
                Some(s) if s == "-" => Some(secret_from_stdin()?),
                other => other,
            };
            let mut body = json!({ "url": url, "events": events });
            if let Some(s) = secret {
                body["secret"] = s.into();
            }
            let v = ctx.post("/api/notifications/rules", &body)?;
            ctx.show(&v, kv)
        }
        RulesCmd::Remove { id } => {
            let id = super::named(&id, "ID", "a rule id (`agt notify rules` shows them)")?;
            let v = ctx.delete(&format!("/api/notifications/rules/{}", encode(id)))?;
            ctx.show(&v, |v| format!("removed webhook rule {} ({})", field(v, "id"), field(v, "url")))
        }
    }
}

/// `--secret -`: the key as standard input holds it, without the line break `echo` or a
/// file adds; empty, it is a usage error as `--secret ""` is.
fn secret_from_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| anyhow::anyhow!("cannot read the secret from standard input: {e}"))?;
    let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_string();
    super::named(&secret, "--secret", "a signing key on standard input")?;
    Ok(secret)
}

fn rules_table(rules: &[Value]) -> Table {
    let mut t = Table::new(&["ID", "SOURCE", "URL", "EVENTS", "SECRET", "CREATED"]);
    for r in rules {
        let events: Vec<String> = items(r.get("events").unwrap_or(&Value::Null)).iter().map(cell).collect();
        t.row(vec![
            field(r, "id"),
            field(r, "source"),
            field(r, "url"),
            clean(&events.join(",")),
            field(r, "secret"),
            field(r, "created_at"),
        ]);
    }
    t
}
