//! `agt user …`: users, deposits and withdrawals, accounts.
//!
//! Wherever a user is named it is passed through as typed: the daemon accepts a
//! username or a user id.

use super::output::{field, items, kv, list_or_none, table_of, Table};
use super::{CliError, CliResult, Ctx};
use crate::client::encode;
use clap::{ArgGroup, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user
    Create {
        /// Username: 1-64 letters, digits, `_`, `.` or `-`
        name: String,
        /// An e-mail address no other user has (compared ignoring case)
        #[arg(long)]
        email: String,
    },
    /// Show one user
    Get {
        /// Username or user id
        user: String,
    },
    /// List users
    #[command(visible_alias = "ls")]
    List,
    /// Change a user's email or status
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["email", "status"])))]
    Update {
        /// Username or user id
        user: String,
        /// A new e-mail address no other user has (compared ignoring case)
        #[arg(long)]
        email: Option<String>,
        /// disabled refuses the user's new orders and trader tokens (as `user disable`)
        #[arg(long, value_parser = ["active", "disabled"])]
        status: Option<String>,
    },
    /// Disable a user: their new orders are refused (user_disabled), and so are their trader tokens
    Disable {
        /// Username or user id
        user: String,
    },
    /// Re-enable a disabled user
    Enable {
        /// Username or user id
        user: String,
    },
    /// Credit cash (USD) or an asset to a user's account
    #[command(allow_negative_numbers = true)]
    Deposit {
        /// Username or user id
        user: String,
        /// USD, or a symbol's base asset (AAPL, BTC)
        asset: String,
        /// A decimal > 0, e.g. 10000 or 0.5
        amount: String,
    },
    /// Debit cash or an asset from a user's account (only what is available)
    #[command(allow_negative_numbers = true)]
    Withdraw {
        /// Username or user id
        user: String,
        /// USD or any asset the account holds
        asset: String,
        /// A decimal > 0, at most what is available
        amount: String,
    },
    /// Balances (total, held, available) and positions
    Account {
        /// Username or user id
        user: String,
    },
}

pub fn run(ctx: &Ctx, cmd: UserCmd) -> CliResult {
    match cmd {
        UserCmd::Create { name, email } => {
            super::named(&name, "NAME", "a username: 1-64 letters, digits, `_`, `.` or `-`")?;
            super::named(&email, "--email", AN_EMAIL)?;
            let v = ctx.post("/api/users", &json!({ "username": name, "email": email }))?;
            ctx.show(&v, kv)
        }
        UserCmd::Get { user } => {
            let v = ctx.get(&path(&user)?)?;
            ctx.show(&v, kv)
        }
        UserCmd::List => {
            let v = ctx.get("/api/users")?;
            ctx.show(&v, |v| list_or_none(users_table(&items(v)), "no users"))
        }
        UserCmd::Update { user, email, status } => {
            let path = path(&user)?;
            let email = super::named_opt(email, "--email", AN_EMAIL)?;
            let mut body = serde_json::Map::new();
            if let Some(e) = email {
                body.insert("email".into(), e.into());
            }
            if let Some(s) = status {
                body.insert("status".into(), s.into());
            }
            let v = ctx.put(&path, &Value::Object(body))?;
            ctx.show(&v, kv)
        }
        UserCmd::Disable { user } => set_status(ctx, &user, "disabled"),
        UserCmd::Enable { user } => set_status(ctx, &user, "active"),
        UserCmd::Deposit { user, asset, amount } => transfer(ctx, &user, "deposits", asset, amount),
        UserCmd::Withdraw { user, asset, amount } => transfer(ctx, &user, "withdrawals", asset, amount),
        UserCmd::Account { user } => {
            let v = ctx.get(&format!("{}/account", path(&user)?))?;
            ctx.show(&v, account)
        }
    }
}

/// What an empty `--email` is asked to be instead (a user always has one).
const AN_EMAIL: &str = "an email address, e.g. bob@example.com";

/// The route of one user; an empty name is a usage error ([`super::named`]), not a
/// request for the user `" "` (or, as an empty segment, for the list).
fn path(user: &str) -> Result<String, CliError> {
    let user = super::named(user, "USER", super::A_USER)?;
    Ok(format!("/api/users/{}", encode(user)))
}

fn set_status(ctx: &Ctx, user: &str, status: &str) -> CliResult {
    let v = ctx.put(&path(user)?, &json!({ "status": status }))?;
    ctx.show(&v, |v| format!("{} is {}", field(v, "username"), field(v, "status")))?;
    if status == "disabled" && !ctx.quiet() {
        resting_orders_note(ctx, &v);
    }
    Ok(())
}

/// The most open orders the note after `disable` counts before it says "or more".
const COUNTED_OPEN: usize = 1000;

/// Disabling a user refuses its new orders and its tokens, but its resting orders stay on
/// the book and can still fill, and the user can no longer cancel them itself: say so,
/// with the command that cancels them, so that an operator who meant "stop this user's
/// trading" is not left with orders trading on. A note on stderr (the JSON on stdout is
/// unchanged); a failed count only leaves the note out.
fn resting_orders_note(ctx: &Ctx, user: &Value) {
    let (id, name) = (field(user, "user_id"), field(user, "username"));
    let query = format!("/api/orders?user_id={}&status=open&limit={COUNTED_OPEN}", encode(&id));
    let Ok(open) = ctx.get(&query) else { return };
    let n = items(&open).len();
    if n > 0 {
        let count = if n >= COUNTED_OPEN {
            format!("{n} or more open orders")
        } else if n == 1 {
            "1 open order".into()
        } else {
            format!("{n} open orders")
        };
        eprintln!(
            "note: {name} has {count}: they stay on the book and can still fill; cancel them with `agt order cancel-all --user {name}`"
        );
    }
}

fn transfer(ctx: &Ctx, user: &str, kind: &str, asset: String, amount: String) -> CliResult {
    let path = path(user)?;
    super::named(&asset, "ASSET", "USD or a symbol's base asset (AAPL, BTC)")?;
    super::named(&amount, "AMOUNT", "a decimal > 0, e.g. 10000 or 0.5")?;
    let v = ctx.post(&format!("{path}/{kind}"), &json!({ "asset": asset, "amount": amount }))?;
    ctx.show(&v, |v| if v.get("balances").is_some() { account(v) } else { kv(v) })
}

pub fn users_table(users: &[Value]) -> Table {
    table_of(
        users,
        &[("USER ID", "user_id|id"), ("USERNAME", "username"), ("EMAIL", "email"), ("STATUS", "status"), ("CREATED", "created_at")],
    )
}

/// Balances, then positions when there are any.
pub fn account(v: &Value) -> String {
    let mut out = format!("user: {}\n\n", field(v, "user_id"));
    let balances = table_of(
        &items(v.get("balances").unwrap_or(&Value::Null)),
        &[("ASSET", "asset"), ("TOTAL", "total"), ("HELD", "held"), ("AVAILABLE", "available")],
    );
    out.push_str(&list_or_none(balances, "no balances"));
    let positions = items(v.get("positions").unwrap_or(&Value::Null));
    if !positions.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table_of(&positions, &[("SYMBOL", "symbol"), ("QUANTITY", "quantity"), ("AVG PRICE", "average_price")]).render());
    }
    out
}
