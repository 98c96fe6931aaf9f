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
    by_hash: Arc<RwLock<HashMap<String, Arc<TokenInfo>>>>,
}

impl Tokens {
    /// The token a bearer secret belongs to, if it is valid and not revoked. Every
    /// request over TCP asks: the hash is written into a buffer on the stack and the
    /// token shared, not copied (a `String` for the hash and five for the token were
    /// allocated per request before).
    pub fn verify(&self, secret: &str) -> Option<Arc<TokenInfo>> {
        let mut hex = [0u8; 64];
        let hash = super::hash_secret_into(secret, &mut hex);
        self.by_hash.read().unwrap().get(hash).cloned()
    }

    /// Whether a token a request was let in with is still live (not revoked since): a
    /// stream that outlives its request (`GET /api/events?follow=true`) asks before each
    /// event it sends, so a revoke ends it too. By id, so that a rebuild of the read
    /// model (a restart of auth) does not end it.
    pub fn is_live(&self, token: &TokenInfo) -> bool {
        self.by_hash.read().unwrap().values().any(|t| t.id == token.id)
    }

    pub(super) fn put(&self, hash: String, token: TokenInfo) {
        self.by_hash.write().unwrap().insert(hash, Arc::new(token));
    }

    pub(super) fn remove(&self, hash: &str) {
        self.by_hash.write().unwrap().remove(hash);
    }

    pub(super) fn replace_all(&self, tokens: HashMap<String, TokenInfo>) {
        *self.by_hash.write().unwrap() = tokens.into_iter().map(|(hash, t)| (hash, Arc::new(t))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Role;

    /// Stored hashes are lowercase hex of SHA-256, as `hex::encode` wrote them: tokens
    /// made by an older agt keep working.
    #[test]
    fn a_secret_hashes_as_stored_and_finds_its_token() {
        assert_eq!(super::super::hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let tokens = Tokens::default();
        let info = TokenInfo {
            id: "tok_1".into(),
            name: "ci".into(),
            role: Role::Trader,
            user_id: Some("usr_1".into()),
            created_at: "2026-12-05T00:00:00Z".into(),
            revoked: false,
        };
        tokens.put(super::super::hash_secret("agt_secret"), info);
        let found = tokens.verify("agt_secret").expect("a live token is found");
        assert_eq!((found.id.as_str(), found.role, found.user_id.as_deref()), ("tok_1", Role::Trader, Some("usr_1")));
        assert!(tokens.verify("agt_other").is_none());
        tokens.remove(&super::super::hash_secret("agt_secret"));
        assert!(tokens.verify("agt_secret").is_none(), "revoked at once");
    }
}
