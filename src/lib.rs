//! agt: a trading platform in a box.
//!
//! # Layout
//!
//! - [`api`]: wire types (serde) and error codes shared by the daemon and its clients.
//! - [`bench`]: `agt bench`, the built-in load generator.
//! - [`client`]: the HTTP client over the Unix socket or TCP, used by the CLI and the TUI.
//! - [`cli`]: the clap command tree and one handler file per noun.
//! - [`daemon`]: boot, supervisor, HTTP server (socket + TCP), routes and auth.
//! - [`demo`]: `agt demo`, a synthetic market driven through the public API.
//! - [`services`]: one folder per service (an actor owning its SQLite store), the event
//!   bus and the store helpers.
//! - [`tui`]: the `agt tui` dashboard.
//!
//! `ARCHITECTURE.md` at the repository root is the map; read it first.

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod demo;
pub mod services;
#[cfg(test)]
mod testing;
pub mod tui;
