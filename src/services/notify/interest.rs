//! Which events notify's feed hands it: those a rule could want.
//!
//! Every event used to reach notify's mailbox (~5 per order), to be matched against no
//! rule at all on a daemon without webhooks: a message, a wake-up of notify's thread and
//! a pass through its batch for each. The feed ([`crate::daemon::follower`]) now asks
//! [`Interest::feed_wants`] first and skips what no rule names, telling notify only how
//! far it has gone (`Cmd::Passed`).
//!
//! The run-time rules' event types are kept here as a bit per type, written only by the
//! notify service: it sets a new rule's bits *before* the commit that answers it, so
//! every event published after a client is told of its rule reaches notify (an event
//! from before the rule may or may not: a rule takes effect from its creation). A removed
//! rule's bits are cleared after its removal, and a failed batch leaves at most bits too
//! many until notify's next incarnation loads its rules again. The config's
//! `[[notify.webhooks]]` are read live from the settings, as notify itself reads them.
//! The test is coarse (a type named, or `*`); notify still decides exactly, with
//! [`super::wants`]; the config's webhooks are asked [`super::may_want`].

use crate::services::bus::EVENT_TYPES;
use crate::services::config::SharedSettings;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The event types named by notify's run-time rules, a bit each ([`EVENT_TYPES`] order).
#[derive(Clone, Default)]
pub struct Interest(Arc<AtomicU32>);

const _: () = assert!(EVENT_TYPES.len() <= 32, "a bit per event type");

/// The bits of the event types `events` names (`*`: all of them).
fn mask_of(events: &[String]) -> u32 {
    events.iter().fold(0, |m, e| if e == "*" { u32::MAX } else { m | EVENT_TYPES.iter().position(|t| t == e).map_or(0, |i| 1 << i) })
}

impl Interest {
    /// Adds the types a rule names (notify calls it before the rule's commit).
    pub fn add(&self, events: &[String]) {
        self.0.fetch_or(mask_of(events), Ordering::SeqCst);
    }

    /// Sets the types exactly those rules name (notify calls it after a rule's removal
    /// and when it loads its rules).
    pub fn set<'a>(&self, rules: impl IntoIterator<Item = &'a [String]>) {
        self.0.store(rules.into_iter().fold(0, |m, events| m | mask_of(events)), Ordering::SeqCst);
    }

    fn names(&self, kind: &str) -> bool {
        let bits = self.0.load(Ordering::SeqCst);
        bits == u32::MAX || EVENT_TYPES.iter().position(|t| *t == kind).is_some_and(|i| bits & (1 << i) != 0)
    }

    /// What notify's feed asks of each event: whether a run-time rule or a webhook of
    /// the config (as it stands now) could want it.
    pub fn feed_wants(self, settings: SharedSettings) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        move |kind| self.names(kind) || settings.get().notify.webhooks.iter().any(|w| super::may_want(&w.events, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_feed_wants_what_a_rule_or_a_configured_webhook_names() {
        let settings = SharedSettings::new(Default::default());
        let interest = Interest::default();
        let wants = interest.clone().feed_wants(settings.clone());
        assert!(!wants("ORDER_CREATED") && !wants("TRADE_EXECUTED"), "no rule, no webhook: nothing");

        interest.add(&strings(&["TRADE_EXECUTED", "NOT_A_TYPE"]));
        assert!(wants("TRADE_EXECUTED") && !wants("ORDER_CREATED"));
        interest.add(&strings(&["*"]));
        assert!(wants("ORDER_CREATED") && wants("NOTIFICATION_FAILED"));
        interest.set([strings(&["ORDER_CANCELLED"]).as_slice()]);
        assert!(wants("ORDER_CANCELLED") && !wants("TRADE_EXECUTED"), "a removed rule's types go");
        interest.set(std::iter::empty());
        assert!(!wants("ORDER_CANCELLED"));

        let mut s = crate::services::config::settings::Settings::default();
        s.notify.webhooks.push(crate::services::config::settings::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            events: strings(&["ORDER_EXECUTED"]),
            secret: None,
        });
        settings.replace(s);
        assert!(wants("ORDER_EXECUTED") && !wants("ORDER_CREATED"), "the config is read as it stands");
    }
}
