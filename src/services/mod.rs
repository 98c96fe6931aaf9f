//! The services of agt: one folder per service, each an actor that owns its SQLite store.
pub mod config;
pub mod disk_full;
pub mod trading;

pub mod actor;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod health;
pub mod intake;
pub mod journal;
pub mod lane;
pub mod market;
pub mod names;
pub mod notify;
pub mod orders;
pub mod priority;
pub mod risk;
pub mod spin;
pub mod store;
pub mod users;
pub mod wal_writes;
