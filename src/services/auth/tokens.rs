//! The auth service's read model: the live tokens by the SHA-256 of their secret.
//!
//! **API Boundary:** only the auth service writes it, after the commit that makes a
//! change true and before its reply leaves: a token works as soon as `agt token create`
//! has answered, and is refused as soon as `agt token revoke` has. Others only read it:
//! the TCP guard checks each request's bearer token here, in the connection's own task,
//! instead of a round trip to the auth thread per request. After a restart of the auth
//! service it is rebuilt from the store before the service answers again.

use crate::api::TokenInfo;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// The live tokens, or `None` until the auth service has first loaded them from its
/// store: the listeners accept connections while the services are still starting, and a
/// valid token asked about then is not known yet, not unknown.
#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<Option<ByHash>>>,
    /// Told after every revoke (and rebuild), once the token is gone from the map: a
    /// stream that outlives its request waits on it ([`Tokens::revocations`]) to ask
    /// [`Tokens::is_live`] at once, where it asked only at its next event or its 5 s peer
    /// check (a quiet trader's stream went on for up to 5 s after its token was revoked).
    revoked: Arc<Revocations>,
}

/// A `watch::Sender` with no receivers until a stream subscribes.
struct Revocations(tokio::sync::watch::Sender<()>);

impl Default for Revocations {
    fn default() -> Self {
        Revocations(tokio::sync::watch::channel(()).0)
    }
}

/// The live tokens by the SHA-256 (hex) of their secret, and their ids: a follower asks
/// by id before each event it sends ([`Tokens::is_live`]), which scanned every live token
/// per event before.
#[derive(Default)]
struct ByHash {
    tokens: HashMap<String, Arc<TokenInfo>>,
    ids: HashSet<String>,
}

/// The tokens cannot be checked yet: the auth service has not loaded its store since the
/// daemon started (a 503, so that a client retries, where a 401 would tell it to give up).
#[derive(Debug, PartialEq, Eq)]
pub struct NotLoaded;

impl Tokens {
    /// The token a bearer secret belongs to, if it is valid and not revoked. Every
    /// request over TCP asks: the hash is written into a buffer on the stack and the
    /// token shared, not copied (a `String` for the hash and five for the token were
    /// allocated per request before).
    pub fn verify(&self, secret: &str) -> Result<Option<Arc<TokenInfo>>, NotLoaded> {
        let mut hex = [0u8; 64];
        let hash = super::hash_secret_into(secret, &mut hex);
        Ok(self.by_hash.read().unwrap().as_ref().ok_or(NotLoaded)?.tokens.get(hash).cloned())
    }

    /// Whether a token a request was let in with is still live (not revoked since): a
    /// stream that outlives its request (`GET /api/events?follow=true`) asks before each
    /// event it sends, so a revoke ends it too. By id, so that a rebuild of the read
    /// model (a restart of auth) does not end it.
    pub fn is_live(&self, token: &TokenInfo) -> bool {
        self.by_hash.read().unwrap().as_ref().is_some_and(|m| m.ids.contains(&token.id))
    }

    /// A receiver told after each revoke from now on (its `changed()` resolves), for a
    /// holder of a token to ask [`Tokens::is_live`] again.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<()> {
        self.revoked.0.subscribe()
    }

    /// After a commit that made a token; the service has loaded the map by then.
    pub(super) fn put(&self, hash: String, token: TokenInfo) {
        let mut slot = self.by_hash.write().unwrap();
        let m = slot.get_or_insert_with(ByHash::default);
        m.ids.insert(token.id.clone());
        m.tokens.insert(hash, Arc::new(token));
    }

    pub(super) fn remove(&self, hash: &str) {
        if let Some(m) = self.by_hash.write().unwrap().as_mut() {
            if let Some(t) = m.tokens.remove(hash) {
                m.ids.remove(&t.id);
            }
        }
        self.revoked.0.send_replace(());
    }

    pub(super) fn replace_all(&self, tokens: HashMap<String, TokenInfo>) {
        let ids = tokens.values().map(|t| t.id.clone()).collect();
        let tokens = tokens.into_iter().map(|(hash, t)| (hash, Arc::new(t))).collect();
        *self.by_hash.write().unwrap() = Some(ByHash { tokens, ids });
        self.revoked.0.send_replace(());
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
        tokens.replace_all(HashMap::new());
        tokens.put(super::super::hash_secret("agt_secret"), info);
        let found = tokens.verify("agt_secret").unwrap().expect("a live token is found");
        assert_eq!((found.id.as_str(), found.role, found.user_id.as_deref()), ("tok_1", Role::Trader, Some("usr_1")));
        assert!(matches!(tokens.verify("agt_other"), Ok(None)));
        assert!(tokens.is_live(&found), "a follower let in with it goes on");
        tokens.replace_all(HashMap::from([(super::super::hash_secret("agt_secret"), (*found).clone())]));
        assert!(tokens.is_live(&found), "a rebuild of the read model (auth restarted) does not end it");
        tokens.remove(&super::super::hash_secret("agt_secret"));
        assert!(matches!(tokens.verify("agt_secret"), Ok(None)), "revoked at once");
        assert!(!tokens.is_live(&found), "and its followers end at their next event");
    }

    /// Before auth has loaded its store, no token is known, and none is unknown either.
    #[test]
    fn before_the_first_load_a_token_is_not_refused_but_not_checked() {
        let tokens = Tokens::default();
        assert!(matches!(tokens.verify("agt_secret"), Err(NotLoaded)));
        tokens.replace_all(HashMap::new());
        assert!(matches!(tokens.verify("agt_secret"), Ok(None)));
    }
}
