//! `agt notify list`: the webhook delivery log.

use super::output::{items, list_or_none, table_of};
use super::{CliResult, Ctx};
use crate::client::with_query;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Recent deliveries: webhook, event, result, attempts
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// The filters of `GET /api/notifications`, so a script need not fall back to the API to
/// find the failed deliveries among the last thousands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many deliveries, newest first (1 to 10000) [default: 100]
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only deliveries in this state
    #[arg(long, value_parser = ["pending", "sent", "failed", "all"])]
    pub status: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: NotifyCmd) -> CliResult {
    match cmd {
        NotifyCmd::List(args) => {
            let path = with_query("/api/notifications", &[("limit", args.limit.map(|l| l.to_string())), ("status", args.status)]);
            let v = ctx.get(&path)?;
            ctx.show(&v, |v| {
                let t = table_of(
                    &items(v),
                    &[
                        ("ID", "id|delivery_id"),
                        ("EVENT", "event_type|type|event"),
                        ("URL", "url|webhook"),
                        ("STATUS", "status|result|state"),
                        ("ATTEMPTS", "attempts"),
                        ("UPDATED", "updated_at|timestamp|created_at"),
                        ("ERROR", "last_error|error"),
                    ],
                );
                list_or_none(t, "no notifications")
            })
        }
    }
}
