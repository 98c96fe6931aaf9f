//! The users service's read model: every user by id and by username, in memory.
//!
//! **API Boundary:** only the users service writes it, after the commit that makes a
//! change true and before its reply leaves, so a caller who got an answer reads its own
//! write. Others only read it: the order saga resolves a user without a round trip to
//! the users thread (one fewer hop on every placement). After a restart of the users
//! service it is rebuilt from the store before the service answers again.

use crate::api::User;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<Maps>>,
    /// Told after every change (a user created, updated, disabled; a rebuild), once the
    /// map holds it: a trader's event stream waits on it ([`Directory::changes`]) to see
    /// at once that its user was disabled, even when no event it reads comes.
    changed: Arc<Changes>,
}

/// A `watch::Sender` with no receivers until a stream subscribes.
struct Changes(tokio::sync::watch::Sender<()>);

impl Default for Changes {
    fn default() -> Self {
        Changes(tokio::sync::watch::channel(()).0)
    }
}

/// A user is shared (`Arc`): the order path looks one up for every placement, and a
/// copy of its strings was five allocations each time.
#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<User>>,
    id_by_name: HashMap<String, String>,
    /// Each username in lower case, to the one user it names in any case; `None` where
    /// two users' usernames differ only in case (an older agt's store): the users service
    /// then answers, with which to name (`ambiguous_user`).
    id_by_folded: HashMap<String, Option<String>>,
    /// Whether the users service has loaded its store since the daemon started: until
    /// then a user missing here may exist (the listeners accept requests meanwhile).
    loaded: bool,
}

impl Directory {
    /// A user by id or username, the username in any case (as the users service finds
    /// it); an id wins over a username that looks like one, an exact spelling over another.
    pub fn get(&self, key: &str) -> Option<Arc<User>> {
        let m = self.inner.read().unwrap();
        if let Some(user) = m.by_id.get(key).or_else(|| m.id_by_name.get(key).and_then(|id| m.by_id.get(id))) {
            return Some(user.clone());
        }
        let folded = m.id_by_folded.get(&key.to_ascii_lowercase())?.as_ref()?;
        m.by_id.get(folded).cloned()
    }

    /// Whether the users service has loaded every user once (a miss in [`Directory::get`]
    /// means "no such user" only from then on).
    pub fn loaded(&self) -> bool {
        self.inner.read().unwrap().loaded
    }

    /// A receiver told after each change from now on (its `changed()` resolves).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.0.subscribe()
    }

    /// Adds or replaces a user (usernames never change).
    pub(super) fn put(&self, user: User) {
        self.inner.write().unwrap().put(user);
        self.changed.0.send_replace(());
    }

    pub(super) fn replace_all(&self, users: Vec<User>) {
        let mut m = self.inner.write().unwrap();
        m.by_id.clear();
        m.id_by_name.clear();
        m.id_by_folded.clear();
        for u in users {
            m.put(u);
        }
        m.loaded = true;
        drop(m);
        self.changed.0.send_replace(());
    }
}

impl Maps {
    fn put(&mut self, user: User) {
        self.id_by_name.insert(user.username.clone(), user.user_id.clone());
        let id = &user.user_id;
        self.id_by_folded
            .entry(user.username.to_ascii_lowercase())
            .and_modify(|named| {
                if named.as_ref() != Some(id) {
                    *named = None;
                }
            })
            .or_insert_with(|| Some(id.clone()));
        self.by_id.insert(user.user_id.clone(), Arc::new(user));
    }
}

#[cfg(test)]
impl Directory {
    /// As the users service's load leaves it: for tests of its readers without one.
    pub(crate) fn loaded_with(&self, users: Vec<User>) {
        self.replace_all(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str) -> User {
        User {
            user_id: id.into(),
            username: name.into(),
            email: format!("{id}@example.com"),
            status: "active".into(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn a_username_is_found_in_any_case_unless_two_share_it() {
        let d = Directory::default();
        d.replace_all(vec![user("usr_1", "alice"), user("usr_2", "Bob")]);
        d.put(user("usr_1", "alice")); // an update: still the one user
        assert_eq!(d.get("ALICE").unwrap().user_id, "usr_1");
        assert_eq!(d.get("bob").unwrap().user_id, "usr_2");
        // An older agt's store with `Bob` and `BOB`: each by its spelling, no other.
        d.put(user("usr_3", "BOB"));
        assert_eq!(d.get("Bob").unwrap().user_id, "usr_2");
        assert_eq!(d.get("BOB").unwrap().user_id, "usr_3");
        assert!(d.get("bob").is_none(), "ambiguous: the users service says which to name");
    }
}
