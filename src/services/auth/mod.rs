//! The auth service: API tokens for TCP clients (DESIGN.md §4).
//!
//! A token's secret is shown once, when it is created; the store keeps only its SHA-256.
//! Verification is a lookup of that hash in memory ([`Tokens`], the service's read
//! model), so it costs neither a disk read nor a message to this service's thread.

mod tokens;

pub use tokens::{NotLoaded, Tokens};

use crate::api::{ApiError, Role, TokenCreated, TokenInfo};
use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A token request, its user already resolved by the caller.
pub struct Create {
    pub role: Role,
    pub user_id: Option<String>,
    pub name: String,
}

/// Which tokens `GET /api/tokens` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Those that work: from memory, so the answer grows with the live tokens, not with
    /// every token ever revoked.
    Live,
    Revoked,
    All,
}

pub enum Cmd {
    Create(Create, Reply<TokenCreated>),
    List(Listed, Reply<Vec<TokenInfo>>),
    Revoke(String, Reply<TokenInfo>),
}

pub struct Auth {
    /// Live tokens by the hash of their secret, as this service's transactions leave
    /// them; `tokens` follows at each commit.
    by_hash: HashMap<String, TokenInfo>,
    tokens: Tokens,
}

const MIGRATIONS: &[&str] = &["CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        user_id TEXT,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );"];

pub fn hash_secret(secret: &str) -> String {
    let mut hex = [0u8; 64];
    hash_secret_into(secret, &mut hex).to_string()
}

/// [`hash_secret`] written into `out`: lowercase hex of the secret's SHA-256.
pub fn hash_secret_into<'a>(secret: &str, out: &'a mut [u8; 64]) -> &'a str {
    hex::encode_to_slice(Sha256::digest(secret.as_bytes()), out).expect("32 bytes are 64 hex digits");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

fn row_to_info(r: &rusqlite::Row) -> rusqlite::Result<TokenInfo> {
    let role: String = r.get(2)?;
    Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        user_id: r.get(3)?,
        created_at: r.get(4)?,
        revoked: r.get::<_, Option<String>>(5)?.is_some(),
    })
}

impl Service for Auth {
    type Cmd = Cmd;
    const NAME: &'static str = "auth";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let mut by_hash = HashMap::new();
        let mut stmt =
            conn.prepare("SELECT id, name, role, user_id, created_at, revoked_at, secret_sha256 FROM tokens WHERE revoked_at IS NULL")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            by_hash.insert(r.get::<_, String>(6)?, row_to_info(r)?);
        }
        ctx.tokens.replace_all(by_hash.clone());
        Ok(Auth { by_hash, tokens: ctx.tokens.clone() })
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Create(c, reply) => {
                let secret = format!("agt_{}", hex::encode(rand::random::<[u8; 24]>()));
                let hash = hash_secret(&secret);
                let info = TokenInfo {
                    id: format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                    name: c.name,
                    role: c.role,
                    user_id: c.user_id,
                    created_at: crate::api::now_rfc3339(),
                    revoked: false,
                };
                tx.prepare_cached(
                    "INSERT INTO tokens (id, name, role, user_id, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![info.id, info.name, info.role.as_str(), info.user_id, hash, info.created_at])?;
                after.event("TOKEN_CREATED", serde_json::to_value(&info).unwrap_or_default());
                let created = TokenCreated {
                    id: info.id.clone(),
                    token: secret,
                    name: info.name.clone(),
                    role: info.role,
                    user_id: info.user_id.clone(),
                    created_at: info.created_at.clone(),
                };
                self.by_hash.insert(hash.clone(), info.clone());
                let tokens = self.tokens.clone();
                after.then(move || tokens.put(hash, info));
                after.reply(reply, Ok(created));
            }
            Cmd::List(Listed::Live, reply) => {
                let mut list: Vec<TokenInfo> = self.by_hash.values().cloned().collect();
                list.sort_unstable_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
                after.reply(reply, Ok(list));
            }
            Cmd::List(which, reply) => {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, name, role, user_id, created_at, revoked_at FROM tokens
                     WHERE ?1 OR revoked_at IS NOT NULL ORDER BY created_at, id",
                )?;
                let list = stmt.query_map([which == Listed::All], row_to_info)?.collect::<rusqlite::Result<Vec<_>>>()?;
                after.reply(reply, Ok(list));
            }
            Cmd::Revoke(id, reply) => {
                let now = crate::api::now_rfc3339();
                let n = tx
                    .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
                    .execute(params![id, now])?;
                if n == 0 {
                    let known = tx.prepare_cached("SELECT 1 FROM tokens WHERE id = ?1")?.exists(params![id])?;
                    let e = if known {
                        ApiError::conflict("token_revoked", format!("token {id} is already revoked"))
                    } else {
                        ApiError::not_found("token", &id)
                    };
                    after.reply(reply, Err(e));
                    return Ok(());
                }
                let hash = self.by_hash.iter().find(|(_, t)| t.id == id).map(|(h, _)| h.clone());
                let mut info = hash
                    .as_ref()
                    .and_then(|h| self.by_hash.remove(h))
                    .ok_or_else(|| ServiceError::Other(format!("token {id} missing from memory")))?;
                let (tokens, hash) = (self.tokens.clone(), hash.unwrap_or_default());
                after.then(move || tokens.remove(&hash));
                info.revoked = true;
                after.event("TOKEN_REVOKED", serde_json::json!({"id": info.id, "name": info.name, "role": info.role}));
                after.reply(reply, Ok(info));
            }
        }
        Ok(())
    }
}
