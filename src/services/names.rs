//! One shared copy of each text that many in-memory records repeat: a user id, a symbol,
//! an asset. Risk's open holds and trading's resting orders each named their user and
//! symbol in strings of their own; with 100 k open orders those copies were a good part of
//! the ~1 KB of memory each open order cost.

use foldhash::HashSet;
use std::sync::Arc;

/// Interned names. Never shrinks: it holds each user, symbol and asset once, however many
/// orders name them, which is bounded by the users and instruments there are.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `name`, made on first use.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.0.insert(n.clone());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_stored_once_and_handed_out_shared() {
        let mut names = Names::default();
        let (a, b) = (names.get("usr_1"), names.get("usr_1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*names.get("AAPL"), "AAPL");
        assert!(!Arc::ptr_eq(&a, &names.get("usr_2")));
        assert_eq!(names.0.len(), 3);
    }
}
