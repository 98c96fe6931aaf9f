//! `agt notify list`: the webhook delivery log.

use super::output::{items, list_or_none, table_of};
use super::{CliResult, Ctx, Cut};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Recent deliveries, newest first: webhook, event, result, attempts, and when a
    /// pending one is tried next
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// The filters of `GET /api/notifications`, so a script need not fall back to the API to
/// find the failed deliveries among the last thousands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many, the newest [default: 100, at most 10000]; when there are
    /// more, a note on stderr says so
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only deliveries in this state
    #[arg(long, value_parser = ["pending", "sent", "failed", "all"])]
    pub status: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: NotifyCmd) -> CliResult {
    match cmd {
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
