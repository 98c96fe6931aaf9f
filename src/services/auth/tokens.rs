//! The auth service's read model: the live tokens by the SHA-256 of their secret.
//!
//! **API Boundary:** only the auth service writes it, after the commit that makes a
//! change true and before its reply leaves: a token works as soon as `agt token create`
//! has answered, and is refused as soon as `agt token revoke` has. Others only read it:
//! the TCP guard checks each request's bearer token here, in the connection's own task,
//! instead of a round trip to the auth thread per request. After a restart of the auth
//! service it is rebuilt from the store before the service answers again.

use crate::api::TokenInfo;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<String, TokenInfo>>>,
}

impl Tokens {
    /// The token a bearer secret belongs to, if it is valid and not revoked.
    pub fn verify(&self, secret: &str) -> Option<TokenInfo> {
        self.by_hash.read().unwrap().get(&super::hash_secret(secret)).cloned()
    }

    pub(super) fn put(&self, hash: String, token: TokenInfo) {
        self.by_hash.write().unwrap().insert(hash, token);
    }

    pub(super) fn remove(&self, hash: &str) {
        self.by_hash.write().unwrap().remove(hash);
    }

    pub(super) fn replace_all(&self, tokens: HashMap<String, TokenInfo>) {
        *self.by_hash.write().unwrap() = tokens;
    }
}
