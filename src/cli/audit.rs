//! `agt audit tail | verify`: the hash-chained audit log.

use super::events::shorten;
use super::output::{clean, field, items, list_or_none, Table};
use super::{CliError, CliResult, Ctx, Cut};
use crate::api::{UnmetAnchor, UnreadableAnchor};
use crate::client::with_query;
use clap::{Args, Subcommand};
use serde_json::Value;

/// How many records `audit tail` shows when not told otherwise.
const TAIL: u32 = 20;

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Show the newest records (or, with --since, the ones after it, oldest first)
    Tail(TailArgs),
    /// Recompute the hash chain and check that it still holds its anchored end; exits 1
    /// if any record was altered or lost
    Verify,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Records after this sequence number, oldest first
    #[arg(long, value_name = "SEQ", allow_negative_numbers = true, value_parser = super::whole_in::<u64>("a sequence number", 0, None))]
    pub since: Option<u64>,
    /// At most this many records [default: 20; with --since, 100, at most 100000, and a
    /// note on stderr when there are more]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = super::count_up_to(100_000))]
    pub limit: Option<u32>,
    /// Only the records of this actor, exactly as the ACTOR column shows it: `socket`,
    /// `token:ID`, or `event:SERVICE` for the events a service published
    #[arg(long)]
    pub actor: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: AuditCmd) -> CliResult {
    match cmd {
        AuditCmd::Tail(args) => tail(ctx, args),
        AuditCmd::Verify => verify(ctx),
    }
}

/// The records as one list (with `-o json` one array, like every finite list: DESIGN.md
/// §5 keeps NDJSON for streams, and this is not one).
fn tail(ctx: &Ctx, args: TailArgs) -> CliResult {
    let table = |v: &Value| {
        let mut t = Table::new(&["SEQ", "TIME", "ACTOR", "ACTION", "DETAIL"]);
        for r in &items(v) {
            let detail = r.get("detail").map(|d| d.to_string()).unwrap_or_default();
            t.row(vec![field(r, "seq"), field(r, "timestamp"), field(r, "actor"), field(r, "action"), clean(&shorten(&detail, 100))]);
        }
        list_or_none(t, "no audit records")
    };
    // Empty, the daemon would match no record and answer an empty list, as if the actor had done nothing.
    let actor = super::named_opt(args.actor, "--actor", "an actor as the ACTOR column shows it (socket, token:ID, event:SERVICE)")?;
    match args.since {
        // Paging forward from --since: the first N after it, and a note when there are more.
        Some(since) => {
            let noun = match &actor {
                Some(a) => format!("records of {a} after {since}"),
                None => format!("records after {since}"),
            };
            let cut = Cut { noun, which: "first", default: 100, max: 100_000, keep_front: true };
            let listed = ctx.get_list("/api/audit", &[("since", Some(since.to_string())), ("actor", actor)], args.limit, cut)?;
            ctx.show_list(&listed, table)
        }
        // A tail: the newest N, as asked.
        None => {
            let query = [("actor", actor), ("limit", Some(args.limit.unwrap_or(TAIL).to_string()))];
            let v = ctx.get(&with_query("/api/audit", &query))?;
            ctx.show(&v, table)
        }
    }
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
    Err(CliError::failed("audit_chain_broken", broken(&v)))
}

/// What a failed verify found: where the chain breaks, which records its anchor says are
/// missing, and an anchor file that cannot be read (with what to do about it).
fn broken(v: &Value) -> String {
    let unreadable = v.get("anchor_unreadable").cloned().and_then(|a| serde_json::from_value::<UnreadableAnchor>(a).ok());
    let records = field(v, "records");
    let chain = match (v.get("first_bad").and_then(Value::as_u64), &unreadable) {
        (None, Some(_)) => format!("{records} records hash well"),
        _ => chain_broken(v),
    };
    match unreadable {
        Some(a) => format!("{}; {chain}", a.advice()),
        None => chain,
    }
}

/// Where the chain breaks, and which records its anchor says are missing.
fn chain_broken(v: &Value) -> String {
    let records = field(v, "records");
    let first_bad = v.get("first_bad").and_then(Value::as_u64);
    let unmet = v.get("unmet_anchor").cloned().and_then(|a| serde_json::from_value::<UnmetAnchor>(a).ok());
    let Some(a) = unmet else {
        return format!(
            "the audit chain breaks at record {} ({records} records checked); records from there on were altered or lost",
            field(v, "first_bad")
        );
    };
    let (m, file) = (a.seq, &a.file);
    let missing = match a.chain_end {
        Some(end) => {
            let which = if end + 1 == m { format!("record {m} is") } else { format!("records {}..{m} are", end + 1) };
            format!(
                "{which} missing: the audit chain ended at record {end}, but its anchor ({file}) says it held records up to {m} (its tail was deleted, or an older audit.db restored)"
            )
        }
        None => format!(
            "record {m} is not the one the audit chain's anchor ({file}) names: the chain was changed or replaced at or before record {m}"
        ),
    };
    let earlier = match first_bad {
        Some(bad) if bad < a.first_missing() => format!("; the chain also breaks earlier, at record {bad}"),
        _ => String::new(),
    };
    format!("{missing}{earlier}; {records} records checked. Once you have looked into it, delete {file} to accept the chain as it is")
}

#[cfg(test)]
mod tests {
    use super::broken;
    use serde_json::json;

    #[test]
    fn a_failed_verify_says_where_the_chain_breaks_and_what_its_anchor_misses() {
        let plain = broken(&json!({"ok": false, "records": 9, "first_bad": 3}));
        assert!(plain.starts_with("the audit chain breaks at record 3 (9 records checked)"), "{plain}");

        let anchor = |chain_end: Option<u64>, first_bad: u64| {
            let unmet = json!({"seq": 57, "hash": "h", "chain_end": chain_end, "file": "data/audit.head.lost"});
            broken(&json!({"ok": false, "records": 60, "first_bad": first_bad, "unmet_anchor": unmet}))
        };
        let cut = anchor(Some(41), 42);
        assert!(cut.starts_with("records 42..57 are missing: the audit chain ended at record 41, but its anchor (data/audit.head.lost) says it held records up to 57"), "{cut}");
        assert!(cut.ends_with("delete data/audit.head.lost to accept the chain as it is"), "{cut}");
        assert!(!cut.contains("earlier"), "{cut}");
        assert!(anchor(Some(56), 57).starts_with("record 57 is missing"));
        let replaced = anchor(None, 12);
        assert!(replaced.starts_with("record 57 is not the one the audit chain's anchor (data/audit.head.lost) names"), "{replaced}");
        assert!(replaced.contains("; the chain also breaks earlier, at record 12;"), "{replaced}");
    }

    /// An anchor that cannot be read: what it means and what to do, by file, before what
    /// the chain itself says.
    #[test]
    fn a_verify_with_an_unreadable_anchor_says_what_to_do() {
        let unreadable = |file: &str| {
            broken(&json!({"ok": false, "records": 60, "first_bad": null, "anchor_unreadable": {"file": file, "error": "is empty"}}))
        };
        let kept = unreadable("data/audit.head.unreadable");
        assert!(
            kept.starts_with(
                "the audit chain's anchor could not be read when the daemon started (now: data/audit.head.unreadable is empty)"
            ),
            "{kept}"
        );
        assert!(kept.contains("delete data/audit.head.unreadable to accept the chain as it is; 60 records hash well"), "{kept}");
        let now = unreadable("data/audit.head");
        assert!(now.starts_with("the audit chain's anchor (data/audit.head) is empty, so the chain's end cannot be checked"), "{now}");
        assert!(now.contains("chmod 600") && now.contains("or delete it"), "{now}");
        let lost = unreadable("data/audit.head.lost");
        assert!(lost.contains("Restore data/audit.head.lost from a backup"), "{lost}");
        // With a broken chain too, both are said.
        let both = broken(
            &json!({"ok": false, "records": 9, "first_bad": 3, "anchor_unreadable": {"file": "data/audit.head", "error": "is empty"}}),
        );
        assert!(both.contains("is empty") && both.ends_with("records from there on were altered or lost"), "{both}");
    }
}
