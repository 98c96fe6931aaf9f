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
}

/// A user is shared (`Arc`): the order path looks one up for every placement, and a
/// copy of its strings was five allocations each time.
#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<User>>,
    id_by_name: HashMap<String, String>,
    /// Whether the users service has loaded its store since the daemon started: until
    /// then a user missing here may exist (the listeners accept requests meanwhile).
    loaded: bool,
}

impl Directory {
    /// A user by id or username; an id wins over a username that looks like one.
    pub fn get(&self, key: &str) -> Option<Arc<User>> {
        let m = self.inner.read().unwrap();
        m.by_id.get(key).or_else(|| m.id_by_name.get(key).and_then(|id| m.by_id.get(id))).cloned()
    }

    /// Whether the users service has loaded every user once (a miss in [`Directory::get`]
    /// means "no such user" only from then on).
    pub fn loaded(&self) -> bool {
        self.inner.read().unwrap().loaded
    }

    /// Adds or replaces a user (usernames never change).
    pub(super) fn put(&self, user: User) {
        let mut m = self.inner.write().unwrap();
        m.id_by_name.insert(user.username.clone(), user.user_id.clone());
        m.by_id.insert(user.user_id.clone(), Arc::new(user));
    }

    pub(super) fn replace_all(&self, users: Vec<User>) {
        let mut m = self.inner.write().unwrap();
        m.by_id.clear();
        m.id_by_name.clear();
        for u in users {
            m.id_by_name.insert(u.username.clone(), u.user_id.clone());
            m.by_id.insert(u.user_id.clone(), Arc::new(u));
        }
        m.loaded = true;
    }
}
