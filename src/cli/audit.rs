//! `agt audit tail | verify`: the hash-chained audit log.

use super::events::shorten;
use super::output::{clean, field, items, list_or_none, Table};
use super::{CliError, CliResult, Ctx};
use crate::client::with_query;
use clap::{Args, Subcommand};
use serde_json::Value;

/// How many records `audit tail` shows when not told otherwise.
const TAIL: usize = 20;

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Show the newest records (or, with --since, the ones after it, oldest first)
    Tail(TailArgs),
    /// Recompute the hash chain; exits 1 if any record was altered
    Verify,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Records after this sequence number, oldest first
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// At most this many records [default: 20; with --since, 100]
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(ctx: &Ctx, cmd: AuditCmd) -> CliResult {
    match cmd {
        AuditCmd::Tail(args) => tail(ctx, args),
        AuditCmd::Verify => verify(ctx),
    }
}

fn tail(ctx: &Ctx, args: TailArgs) -> CliResult {
    // With --since the daemon pages forward from it; without, it answers the newest.
    let limit = args.limit.or(args.since.is_none().then_some(TAIL)).map(|l| l.to_string());
    let path = with_query("/api/audit", &[("since", args.since.map(|s| s.to_string())), ("limit", limit)]);
    let v = ctx.get(&path)?;
    let records = items(&v);
    if ctx.quiet() {
        return Ok(());
    }
    if ctx.json() {
        for r in &records {
            println!("{}", serde_json::to_string(r).expect("a JSON value serializes"));
        }
        return Ok(());
    }
    let mut t = Table::new(&["SEQ", "TIME", "ACTOR", "ACTION", "DETAIL"]);
    for r in &records {
        let detail = r.get("detail").map(|d| d.to_string()).unwrap_or_default();
        t.row(vec![field(r, "seq"), field(r, "timestamp"), field(r, "actor"), field(r, "action"), clean(&shorten(&detail, 100))]);
    }
    println!("{}", list_or_none(t, "no audit records"));
    Ok(())
}

fn verify(ctx: &Ctx) -> CliResult {
    let v = ctx.get("/api/audit/verify")?;
    let records = field(&v, "records");
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return ctx.show(&v, |_| format!("audit chain ok: {records} records verified"));
    }
    if ctx.json() && !ctx.quiet() {
        println!("{}", serde_json::to_string_pretty(&v).expect("a JSON value serializes"));
    }
    Err(CliError::failed(
        "audit_chain_broken",
        format!(
            "the audit chain breaks at record {} ({records} records checked); records from there on were altered or lost",
            field(&v, "first_bad")
        ),
    ))
}
