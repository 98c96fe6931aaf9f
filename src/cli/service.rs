//! `agt service list | restart NAME`: the supervisor's view and control.

use super::output::{duration, field, field_any, items, list_or_none, Table};
use super::{CliResult, Ctx};
use crate::client::encode;
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Every service with its state, restarts and mailbox depth
    #[command(visible_alias = "ls")]
    List,
    /// Restart one service (its mailbox is kept; callers see 503 meanwhile)
    Restart {
        /// users, auth, risk, orders, trading, market, notify, audit, config or health
        name: String,
    },
}

pub fn run(ctx: &Ctx, cmd: ServiceCmd) -> CliResult {
    match cmd {
        ServiceCmd::List => {
            let v = ctx.get("/api/services")?;
            ctx.show(&v, |v| {
                let mut t = Table::new(&["SERVICE", "STATE", "RESTARTS", "UPTIME", "MAILBOX", "LAST ERROR"]);
                for s in items(v) {
                    let uptime = s.get("uptime_s").and_then(Value::as_u64).map(duration).unwrap_or_else(|| "-".into());
                    t.row(vec![
                        field_any(&s, &["name", "service"]),
                        field(&s, "state"),
                        field(&s, "restarts"),
                        uptime,
                        field(&s, "mailbox_depth"),
                        field(&s, "last_error"),
                    ]);
                }
                list_or_none(t, "no services")
            })
        }
        ServiceCmd::Restart { name } => {
            let name = super::named(&name, "NAME", "a service name (`agt service list` shows them)")?;
            let v = ctx.post(&format!("/api/services/{}/restart", encode(name)), &Value::Object(Default::default()))?;
            ctx.show(&v, |_| format!("restarting {name}"))
        }
    }
}
