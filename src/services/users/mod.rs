//! The users service: who may trade (DESIGN.md §4 users).
//!
//! Owns `data/users.db`. Every lookup takes a user id or a username, so the CLI and the
//! API can name a user either way.

mod directory;

pub use directory::Directory;

use crate::api::quote::quoted;
use crate::api::{ApiError, NewUser, User, UserUpdate};
use crate::services::actor::{AfterCommit, Reply, Service, ServiceCtx, ServiceError};
use rusqlite::{params, Connection, OptionalExtension};

pub enum Cmd {
    Create(NewUser, Reply<User>),
    /// By id or username.
    Get(String, Reply<User>),
    /// Oldest first; `limit` the first that many (`None`: all).
    List {
        limit: Option<usize>,
        reply: Reply<Vec<User>>,
    },
    Update(String, UserUpdate, Reply<User>),
}

pub struct Users {
    directory: Directory,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // Emails are told apart without case (`ALICE@example.com` is alice's address); not a
    // unique index, since a store may already hold two that differ only in case.
    "CREATE INDEX users_email_nocase ON users(email COLLATE NOCASE);",
    // Usernames likewise (`Alice` names alice): not unique either, for the stores an older
    // agt left with two usernames that differ only in case (`find` says which to name).
    "CREATE INDEX users_username_nocase ON users(username COLLATE NOCASE);",
    // The list's order: with it, `GET /api/users?limit=N` reads N rows, where a sort of
    // the whole table read every user to give the first N.
    "CREATE INDEX users_created ON users(created_at, user_id);",
];

/// 1–64 letters, digits, `_`, `.` or `-` (DESIGN.md §7), not only dots, and not the shape of a user id:
/// wherever a user is named, its id or its username is accepted, and the id is looked up
/// first, so such a user could never be named by its username.
pub fn validate_username(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(ApiError::invalid("invalid_username", "username must be 1-64 characters of letters, digits, '_', '.' and '-'"));
    }
    // `/api/users/..` is resolved away by every HTTP client before it is sent.
    if name.bytes().all(|b| b == b'.') {
        return Err(ApiError::invalid(
            "invalid_username",
            format!(
                "username {} is only dots, which a URL cannot name (`/api/users/..` is the parent); add a letter or digit",
                quoted(name)
            ),
        ));
    }
    if looks_like_id(name) {
        return Err(ApiError::invalid(
            "invalid_username",
            format!("username {} has the shape of a user id (usr_ and 16 hex digits); choose another", quoted(name)),
        ));
    }
    Ok(())
}

/// `usr_` and 16 hex digits, in any case: what [`create`] makes ids of (lower case), and
/// what a lookup in another case would take for one (`USR_…` names `usr_…`).
fn looks_like_id(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.strip_prefix("usr_").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let ok = email.len() <= 254
        && email.matches('@').count() == 1
        && !email.starts_with('@')
        && !email.ends_with('@')
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid_email", "email must contain exactly one '@', no spaces, and at most 254 characters"))
    }
}

fn row_to_user(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User { user_id: r.get(0)?, username: r.get(1)?, email: r.get(2)?, status: r.get(3)?, created_at: r.get(4)?, updated_at: r.get(5)? })
}

const COLUMNS: &str = "user_id, username, email, status, created_at, updated_at";

/// The user a key names: its id, else its username in any case. A store an older agt
/// filled may hold two usernames that differ only in case (`alice`, `Alice`): each is
/// found by its exact spelling, and another spelling of both (`ALICE`) is a 409
/// `ambiguous_user` naming them, never a guess.
fn find(tx: &Connection, key: &str) -> rusqlite::Result<Result<User, ApiError>> {
    // An id wins over a username that happens to look like one.
    let by_id = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE user_id = ?1"))?.query_row([key], row_to_user).optional()?;
    if let Some(user) = by_id {
        return Ok(Ok(user));
    }
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username = ?1 COLLATE NOCASE ORDER BY created_at, user_id");
    let mut found = tx.prepare_cached(&sql)?.query_map([key], row_to_user)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(match found.len() {
        0 => Err(ApiError::not_found("user", key)),
        1 => Ok(found.remove(0)),
        _ => match found.iter().position(|u| u.username == key) {
            Some(i) => Ok(found.remove(i)),
            None => Err(ambiguous(key, &found)),
        },
    })
}

/// A name in a case that two or more users' usernames share (only an older agt's store
/// holds such users).
fn ambiguous(key: &str, users: &[User]) -> ApiError {
    let names: Vec<String> = users.iter().map(|u| format!("{:?} ({})", u.username, u.user_id)).collect();
    ApiError::conflict(
        "ambiguous_user",
        format!(
            "{} names more than one user, whose usernames differ only in case: {}; name one by its exact username or its id",
            quoted(key),
            names.join(", ")
        ),
    )
}

/// Whether another user has this username or this email, in any ASCII case.
fn taken(tx: &Connection, column: &str, value: &str, except: &str) -> rusqlite::Result<bool> {
    let sql = format!("SELECT 1 FROM users WHERE {column} = ?1 COLLATE NOCASE AND user_id <> ?2");
    Ok(tx.prepare_cached(&sql)?.query_row(params![value, except], |_| Ok(())).optional()?.is_some())
}

impl Service for Users {
    type Cmd = Cmd;
    const NAME: &'static str = "users";
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;

    fn load(conn: &rusqlite::Connection, ctx: &ServiceCtx) -> Result<Self, ServiceError> {
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM users"))?;
        let users = stmt.query_map([], row_to_user)?.collect::<rusqlite::Result<Vec<_>>>()?;
        ctx.directory.replace_all(users);
        Ok(Users { directory: ctx.directory.clone() })
    }

    fn handle(&mut self, tx: &Connection, cmd: Cmd, after: &mut AfterCommit) -> Result<(), ServiceError> {
        match cmd {
            Cmd::Create(new, reply) => {
                let result = create(tx, new, after)?;
                self.publish(&result, after);
                after.reply(reply, result);
            }
            Cmd::Get(key, reply) => {
                let user = find(tx, &key)?;
                after.reply(reply, user);
            }
            Cmd::List { limit, reply } => after.reply(reply, Ok(list(tx, limit)?)),
            Cmd::Update(key, update, reply) => {
                let result = update_user(tx, &key, update, after)?;
                self.publish(&result, after);
                after.reply(reply, result);
            }
        }
        Ok(())
    }
}

impl Users {
    /// Updates the directory once the batch has committed, before the reply leaves.
    fn publish(&self, result: &Result<User, ApiError>, after: &mut AfterCommit) {
        if let Ok(user) = result {
            let (directory, user) = (self.directory.clone(), user.clone());
            after.then(move || directory.put(user));
        }
    }
}

/// The users, oldest first, the first `limit` of them (`None`: all). The limit is the
/// query's, on the index in that order: the store reads only the rows it answers.
fn list(tx: &Connection, limit: Option<usize>) -> rusqlite::Result<Vec<User>> {
    // SQLite's LIMIT takes -1 for none.
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut stmt = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM users ORDER BY created_at, user_id LIMIT ?1"))?;
    let users = stmt.query_map([limit], row_to_user)?.collect();
    users
}

fn create(tx: &Connection, new: NewUser, after: &mut AfterCommit) -> Result<Result<User, ApiError>, ServiceError> {
    if let Err(e) = validate_username(&new.username).and_then(|_| validate_email(&new.email)) {
        return Ok(Err(e));
    }
    if taken(tx, "username", &new.username, "")? {
        return Ok(Err(ApiError::conflict(
            "username_taken",
            format!("username {} is already taken (usernames are told apart without case: `Alice` is alice)", quoted(&new.username)),
        )));
    }
    if taken(tx, "email", &new.email, "")? {
        return Ok(Err(ApiError::conflict("email_taken", format!("email {} is already in use", quoted(&new.email)))));
    }
    let now = crate::api::now_rfc3339();
    let user = User {
        user_id: format!("usr_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        username: new.username,
        email: new.email,
        status: "active".into(),
        created_at: now.clone(),
        updated_at: now,
    };
    tx.prepare_cached(&format!("INSERT INTO users ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))?.execute(params![
        user.user_id,
        user.username,
        user.email,
        user.status,
        user.created_at,
        user.updated_at
    ])?;
    after.event("USER_CREATED", serde_json::to_value(&user).unwrap_or_default());
    Ok(Ok(user))
}

fn update_user(tx: &Connection, key: &str, update: UserUpdate, after: &mut AfterCommit) -> Result<Result<User, ApiError>, ServiceError> {
    let mut user = match find(tx, key)? {
        Ok(user) => user,
        Err(e) => return Ok(Err(e)),
    };
    if update.username.as_ref().is_some_and(|n| *n != user.username) {
        return Ok(Err(ApiError::invalid(
            "invalid_request",
            "a username cannot be changed (orders, tokens and scripts name the user by it); create a new user instead",
        )));
    }
    if update.email.is_none() && update.status.is_none() {
        return Ok(Err(ApiError::invalid("invalid_request", "nothing to change: send \"email\" and/or \"status\"")));
    }
    let changes = update.email.as_ref().is_some_and(|e| *e != user.email) || update.status.as_ref().is_some_and(|s| *s != user.status);
    if let Some(email) = &update.email {
        if let Err(e) = validate_email(email) {
            return Ok(Err(e));
        }
        if taken(tx, "email", email, &user.user_id)? {
            return Ok(Err(ApiError::conflict("email_taken", format!("email {} is already in use", quoted(email)))));
        }
        user.email = email.clone();
    }
    if let Some(status) = &update.status {
        if status != "active" && status != "disabled" {
            return Ok(Err(ApiError::invalid(
                "invalid_status",
                format!("status must be \"active\" or \"disabled\", got {}", quoted(status)),
            )));
        }
        user.status = status.clone();
    }
    // The same values again: no write, no event, and `updated_at` stays.
    if !changes {
        return Ok(Ok(user));
    }
    user.updated_at = crate::api::now_rfc3339();
    tx.prepare_cached("UPDATE users SET email = ?2, status = ?3, updated_at = ?4 WHERE user_id = ?1")?.execute(params![
        user.user_id,
        user.email,
        user.status,
        user.updated_at
    ])?;
    after.event("USER_UPDATED", serde_json::to_value(&user).unwrap_or_default());
    Ok(Ok(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `?limit=N` reads N users, not every user to cut the list after: counted in
    /// SQLite's virtual machine steps (about ten a row read), not timed.
    #[test]
    fn a_limited_list_reads_only_the_users_it_gives() {
        let conn = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            conn.execute_batch(m).unwrap();
        }
        conn.execute(
            "INSERT INTO users (user_id, username, email, status, created_at, updated_at)
             WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 20000)
             SELECT printf('usr_%016d', i), 'u' || i, 'u' || i || '@example.com', 'active',
                    printf('2026-01-01T00:00:%05dZ', 20000 - i), 'now' FROM k",
            [],
        )
        .unwrap();
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let steps = std::sync::Arc::new(AtomicU64::new(0));
        let counter = steps.clone();
        conn.progress_handler(
            100,
            Some(move || {
                counter.fetch_add(100, Relaxed);
                false
            }),
        );
        let first = list(&conn, Some(3)).unwrap();
        let taken = steps.swap(0, Relaxed);
        assert_eq!(first.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["u20000", "u19999", "u19998"], "oldest first");
        assert!(taken < 2_000, "the first 3 of 20,000 users took {taken} steps");
        assert_eq!(list(&conn, None).unwrap().len(), 20_000);
        assert!(steps.load(Relaxed) > 100_000, "the whole list is read row by row: the count counts");
    }
}
