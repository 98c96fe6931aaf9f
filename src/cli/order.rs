//! `agt order …`: place, get, list, cancel, amend, cancel-all.

use super::output::{field, items, list_or_none, table_of, Table};
use super::{CliError, CliResult, Ctx, Cut};
use crate::client::encode;
use clap::{ArgGroup, Subcommand, ValueEnum};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Limit,
    Market,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Tif {
    /// Good till cancelled: the remainder rests on the book
    Gtc,
    /// Immediate or cancel: the remainder is cancelled
    Ioc,
    /// Fill or kill: all at once or nothing
    Fok,
}

#[derive(Debug, Subcommand)]
pub enum OrderCmd {
    /// Place an order; without PRICE it is a market order
    #[command(allow_negative_numbers = true)]
    Place {
        /// Username or user id
        user: String,
        /// The symbol, e.g. AAPL or BTC-USD (`agt symbol list` shows them)
        symbol: String,
        /// Buy or sell the symbol's base asset
        #[arg(value_enum)]
        side: Side,
        /// How many units of the base asset, on the symbol's lot
        #[arg(value_name = "QTY")]
        quantity: String,
        /// Limit price; omit for a market order
        price: Option<String>,
        /// limit (needs PRICE) or market (no PRICE) [default: limit with PRICE, else market]
        #[arg(long = "type", value_enum)]
        kind: Option<Kind>,
        /// Time in force [daemon default: gtc]
        #[arg(long, value_enum)]
        tif: Option<Tif>,
        /// Your id for this order; placing the same id again returns the first order (one
        /// that was refused is reported as its refusal was: exit 1)
        #[arg(long = "client-id", value_name = "ID")]
        client_id: Option<String>,
    },
    /// Show one order with its fills
    Get {
        /// The order id (ord_…), as `order place` and `order list` show it
        id: String,
    },
    /// List orders, newest first (open ones unless --all)
    #[command(visible_alias = "ls")]
    List {
        /// Only this user's (username or id)
        #[arg(long)]
        user: Option<String>,
        /// Only this symbol's
        #[arg(long)]
        symbol: Option<String>,
        /// Include filled, cancelled, rejected and expired orders
        #[arg(long)]
        all: bool,
        /// At most this many, the newest [default: 100, at most 10000]; when there are
        /// more, a note on stderr says so
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = super::count_up_to(10_000))]
        limit: Option<u32>,
    },
    /// Cancel an open order
    Cancel {
        /// The order id (ord_…)
        id: String,
    },
    /// Change an open order's price or quantity (keeps its id)
    #[command(allow_negative_numbers = true)]
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["price", "qty"])))]
    Amend {
        /// The order id (ord_…)
        id: String,
        /// The new limit price (a change loses the order's time priority)
        #[arg(long)]
        price: Option<String>,
        /// The new total quantity, what is already filled included, so more than that
        /// (an increase loses the order's time priority)
        #[arg(long)]
        qty: Option<String>,
    },
    /// Cancel every open order, or those of one user and/or symbol
    CancelAll {
        /// Only this user's orders (username or id)
        #[arg(long)]
        user: Option<String>,
        /// Only this symbol's orders
        #[arg(long)]
        symbol: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: OrderCmd) -> CliResult {
    match cmd {
        OrderCmd::Place { user, symbol, side, quantity, price, kind, tif, client_id } => {
            super::named(&user, "USER", super::A_USER)?;
            super::named(&symbol, "SYMBOL", super::A_SYMBOL)?;
            super::named(&quantity, "QTY", "a quantity on the symbol's lot, e.g. 10")?;
            // Given but empty, PRICE is no price: nothing the daemon could place (leave it out for a market order).
            let price = super::named_opt(price, "PRICE", "a limit price, or leave PRICE out for a market order")?;
            let client_id = super::named_opt(client_id, "--client-id", "an id of your own for this order, or leave --client-id out")?;
            let kind = match (kind, &price) {
                (Some(Kind::Limit), None) => return Err(CliError::Usage("a limit order needs a PRICE".into())),
                (Some(Kind::Market), Some(_)) => {
                    return Err(CliError::Usage("a market order takes no PRICE; drop it or use --type limit".into()))
                }
                (Some(k), _) => k,
                (None, Some(_)) => Kind::Limit,
                (None, None) => Kind::Market,
            };
            let mut body = Map::new();
            body.insert("user_id".into(), user.into());
            body.insert("symbol".into(), symbol.into());
            body.insert("side".into(), name(side).into());
            body.insert("quantity".into(), quantity.into());
            if let Some(p) = price {
                body.insert("price".into(), p.into());
            }
            body.insert("type".into(), name(kind).into());
            if let Some(t) = tif {
                body.insert("time_in_force".into(), name(t).into());
            }
            let replayable = client_id.is_some();
            if let Some(c) = client_id {
                body.insert("client_order_id".into(), c.into());
            }
            let v = ctx.post("/api/orders", &Value::Object(body))?;
            if replayable {
                refused_before(&v)?;
            }
            ctx.show(&v, order_view)
        }
        OrderCmd::Get { id } => {
            let v = ctx.get(&path(&id)?)?;
            ctx.show(&v, order_view)
        }
        OrderCmd::List { user, symbol, all, limit } => {
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let symbol = super::named_opt(symbol, "--symbol", super::A_SYMBOL)?;
            let query = [("user_id", user), ("symbol", symbol), ("status", Some(if all { "all" } else { "open" }.to_string()))];
            let noun = if all { "orders" } else { "open orders" };
            let cut = Cut { noun: noun.into(), which: "newest", default: 100, max: 10_000, keep_front: true };
            let listed = ctx.get_list("/api/orders", &query, limit, cut)?;
            ctx.show_list(&listed, |v| list_or_none(orders_table(&items(v)), &format!("no {noun}")))
        }
        OrderCmd::Cancel { id } => {
            let v = ctx.delete(&path(&id)?)?;
            ctx.show(&v, order_view)
        }
        OrderCmd::Amend { id, price, qty } => {
            let path = path(&id)?;
            let price = super::named_opt(price, "--price", "the new limit price, or leave --price out to keep it")?;
            let qty = super::named_opt(qty, "--qty", "the new quantity, or leave --qty out to keep it")?;
            let mut body = Map::new();
            if let Some(p) = price {
                body.insert("price".into(), p.into());
            }
            if let Some(q) = qty {
                body.insert("quantity".into(), q.into());
            }
            let v = ctx.patch(&path, &Value::Object(body))?;
            ctx.show(&v, order_view)
        }
        OrderCmd::CancelAll { user, symbol } => {
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let symbol = super::named_opt(symbol, "--symbol", super::A_SYMBOL)?;
            let mut body = Map::new();
            if let Some(u) = user {
                body.insert("user_id".into(), u.into());
            }
            if let Some(s) = symbol {
                body.insert("symbol".into(), s.into());
            }
            let v = ctx.post("/api/orders/cancel-all", &Value::Object(body))?;
            ctx.show(&v, cancelled_view)
        }
    }
}

fn name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value().expect("no skipped variants").get_name().to_string()
}

/// The route of one order; an empty id is a usage error ([`super::named`]).
fn path(id: &str) -> Result<String, CliError> {
    let id = super::named(id, "ID", "an order id (`agt order list` shows them)")?;
    Ok(format!("/api/orders/{}", encode(id)))
}

pub fn orders_table(orders: &[Value]) -> Table {
    table_of(
        orders,
        &[
            ("ORDER ID", "order_id"),
            ("USER", "user_id"),
            ("SYMBOL", "symbol"),
            ("SIDE", "side"),
            ("TYPE", "type"),
            ("PRICE", "price"),
            ("QTY", "quantity"),
            ("FILLED", "filled_quantity"),
            ("STATUS", "status"),
            ("CREATED", "created_at"),
        ],
    )
}

/// One order: its fields, then its fills.
pub fn order_view(o: &Value) -> String {
    let price = match o.get("price") {
        Some(Value::Null) | None => "market".to_string(),
        Some(_) => field(o, "price"),
    };
    let mut lines = vec![
        ("order", field(o, "order_id")),
        ("status", field(o, "status")),
        ("user", field(o, "user_id")),
        ("symbol", field(o, "symbol")),
        ("side", format!("{} {} {}", field(o, "side"), field(o, "type"), field(o, "time_in_force"))),
        ("price", price),
        ("quantity", field(o, "quantity")),
        ("filled", format!("{} (avg price {})", field(o, "filled_quantity"), field(o, "average_price"))),
        ("remaining", field(o, "remaining_quantity")),
    ];
    if o.get("client_order_id").is_some_and(|c| !c.is_null()) {
        lines.push(("client id", field(o, "client_order_id")));
    }
    if o.get("reject_reason").is_some_and(|c| !c.is_null()) {
        lines.push(("rejected", field(o, "reject_reason")));
    }
    lines.push(("created", field(o, "created_at")));
    lines.push(("updated", field(o, "updated_at")));
    let mut out = lines.iter().map(|(k, v)| format!("{k}:{}{v}", " ".repeat(11 - k.len()))).collect::<Vec<_>>().join("\n");
    let fills = items(o.get("fills").unwrap_or(&Value::Null));
    if !fills.is_empty() {
        out.push_str("\n\n");
        out.push_str(
            &table_of(&fills, &[("TRADE ID", "trade_id"), ("PRICE", "price"), ("QTY", "quantity"), ("TIME", "timestamp")]).render(),
        );
    }
    out
}

/// The answer to cancel-all: the cancelled orders, or a count.
fn cancelled_view(v: &Value) -> String {
    if let Some(n) = v.get("cancelled").and_then(Value::as_u64).or_else(|| v.get("count").and_then(Value::as_u64)) {
        return format!("cancelled {n} order{}", if n == 1 { "" } else { "s" });
    }
    let orders = items(v);
    if orders.is_empty() {
        return "no open orders to cancel".to_string();
    }
    format!("cancelled {} order{}\n\n{}", orders.len(), if orders.len() == 1 { "" } else { "s" }, orders_table(&orders).render())
}

/// A placement is refused with an error (exit 1), but a retry with the same
/// `client_order_id` answers the first order as it stands (200), a refused one included.
/// Such a retry is told as the refusal was: nothing on stdout, the first refusal's code
/// and reason on stderr, exit 1. A script that retries after a lost answer must not read
/// the order it prints as placed, nor see a different error than the first try got.
fn refused_before(order: &Value) -> CliResult {
    if order.get("status").and_then(Value::as_str) != Some("rejected") {
        return Ok(());
    }
    let id = order.get("order_id").and_then(Value::as_str).unwrap_or("?");
    let why = order.get("reject_reason").and_then(Value::as_str).unwrap_or("");
    let (code, reason) = reject_code(why);
    Err(CliError::failed(
        code,
        format!(
            "{reason}\norder {id} is stored as rejected (agt order get {id}): it was rejected when it was first placed \
             with this --client-id, and the same id always answers that order; place it again with a new --client-id"
        ),
    ))
}

/// The code and message of a rejected order's `reject_reason` (`"insufficient_funds: …"`,
/// as the refusal's error had them); `order_rejected` for a reason without a code.
fn reject_code(reason: &str) -> (&str, &str) {
    match reason.split_once(": ") {
        Some((code, message)) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => (code, message),
        _ if reason.is_empty() => ("order_rejected", "the order was rejected (no reason was stored)"),
        _ => ("order_rejected", reason),
    }
}

#[cfg(test)]
mod tests {
    use super::reject_code;

    #[test]
    fn a_reject_reason_gives_back_the_refusals_code_and_message() {
        assert_eq!(
            reject_code("insufficient_funds: buying 1 at 100 needs 100 USD: short by 100"),
            ("insufficient_funds", "buying 1 at 100 needs 100 USD: short by 100")
        );
        assert_eq!(reject_code("Odd: not a code"), ("order_rejected", "Odd: not a code"));
        assert_eq!(reject_code("no code at all"), ("order_rejected", "no code at all"));
        assert_eq!(reject_code("").0, "order_rejected");
    }
}
