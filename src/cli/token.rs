//! `agt token create | list | revoke`: bearer tokens for TCP clients.

use super::output::{field, items, list_or_none, table_of};
use super::{CliResult, Ctx};
use crate::client::encode;
use clap::Subcommand;
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once, store it now
    Create {
        /// admin does everything; trader trades for one user (--user); viewer reads
        #[arg(long, value_parser = ["admin", "trader", "viewer"])]
        role: String,
        /// The user a trader token acts for (username or id)
        #[arg(long)]
        user: Option<String>,
        /// A label to recognise it by
        #[arg(long)]
        name: Option<String>,
    },
    /// List the live tokens (never their secrets)
    #[command(visible_alias = "ls")]
    List {
        /// Revoked tokens too (they stay on the record, marked REVOKED)
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: it stops working at once
    Revoke {
        /// The token's id (tok_…), as `agt token list` shows it
        id: String,
    },
}

pub fn run(ctx: &Ctx, cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::Create { role, user, name } => {
            let user = super::named_opt(user, "--user", super::A_USER)?;
            let name = super::named_opt(name, "--name", "a label to recognise the token by, or leave --name out for ROLE-token")?;
            let mut body = Map::new();
            body.insert("role".into(), role.into());
            if let Some(u) = user {
                body.insert("user_id".into(), u.into());
            }
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            let v = ctx.post("/api/tokens", &Value::Object(body))?;
            if ctx.quiet() {
                // The secret is shown only now: even -q prints it, alone, for scripts.
                println!("{}", field(&v, "token"));
                return Ok(());
            }
            ctx.show(&v, |v| {
                format!(
                    "token:   {}\nid:      {}\nname:    {}\nrole:    {}\nuser:    {}\ncreated: {}\n\nThe secret is shown only once; store it now. Use it with --token or AGT_TOKEN.",
                    field(v, "token"),
                    field(v, "id"),
                    field(v, "name"),
                    field(v, "role"),
                    field(v, "user_id"),
                    field(v, "created_at"),
                )
            })
        }
        TokenCmd::List { all } => {
            let v = ctx.get(if all { "/api/tokens?status=all" } else { "/api/tokens" })?;
            ctx.show(&v, |v| {
                let t = table_of(
                    &items(v),
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("ROLE", "role"),
                        ("USER", "user_id"),
                        ("CREATED", "created_at"),
                        ("REVOKED", "revoked"),
                    ],
                );
                list_or_none(t, if all { "no tokens" } else { "no live tokens (--all lists the revoked ones too)" })
            })
        }
        TokenCmd::Revoke { id } => {
            let id = super::named(&id, "ID", "a token id (`agt token list` shows them)")?;
            let v = ctx.delete(&format!("/api/tokens/{}", encode(id)))?;
            ctx.show(&v, |_| format!("revoked token {id}"))
        }
    }
}
