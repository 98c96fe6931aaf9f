//! The market's instruments as a read model (ARCHITECTURE.md, "API Boundary: read
//! models"): the config service reads it to tell an edit of `agt.toml`'s `[[symbols]]`
//! that a start will list (a new symbol) from one that never applies (an existing
//! instrument asked for other terms), without asking the market by message from its
//! own thread. Written only by the market: whole when it loads (after its start-up
//! seeding commits), and an instrument at a time after the commit that adds it.

use crate::api::Instrument;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Every instrument by symbol, as one snapshot a reader keeps while it looks.
pub type BySymbol = Arc<BTreeMap<String, Instrument>>;

#[derive(Clone, Default)]
pub struct Listed(Arc<RwLock<Option<BySymbol>>>);

impl Listed {
    /// Every instrument, by symbol; `None` until the market has loaded.
    pub fn get(&self) -> Option<BySymbol> {
        self.0.read().unwrap().clone()
    }

    /// The instruments as the market has them after it loaded.
    pub(super) fn replace_all(&self, instruments: Vec<Instrument>) {
        let map = instruments.into_iter().map(|i| (i.symbol.clone(), i)).collect();
        *self.0.write().unwrap() = Some(Arc::new(map));
    }

    /// An instrument added since (instruments are few and added rarely: the map is
    /// copied, so a reader's snapshot never changes under it).
    pub(super) fn put(&self, instrument: Instrument) {
        let mut slot = self.0.write().unwrap();
        let mut map = slot.as_deref().cloned().unwrap_or_default();
        map.insert(instrument.symbol.clone(), instrument);
        *slot = Some(Arc::new(map));
    }
}

#[cfg(test)]
impl Listed {
    /// As the market's load leaves it: for tests of its readers without a market.
    pub(crate) fn loaded_with(&self, instruments: Vec<Instrument>) {
        self.replace_all(instruments)
    }
}
