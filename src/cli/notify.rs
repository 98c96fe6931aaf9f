//! `agt notify list`: the webhook delivery log.

use super::output::{items, list_or_none, table_of};
use super::{CliResult, Ctx};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Recent deliveries: webhook, event, result, attempts
    #[command(visible_alias = "ls")]
    List,
}

pub fn run(ctx: &Ctx, cmd: NotifyCmd) -> CliResult {
    match cmd {
        NotifyCmd::List => {
            let v = ctx.get("/api/notifications")?;
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
