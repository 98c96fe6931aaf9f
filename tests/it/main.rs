//! Black-box tests: each starts a real daemon on a temporary home and drives it over the
//! socket, TCP and the `agt` binary. One test binary, modules by area.

mod util;

mod audit;
mod behind;
mod bench;
mod cli;
mod cli_offline;
mod config;
mod daemon;
mod disk_full;
mod events;
mod http_client;
mod logs;
mod market;
mod monitoring;
mod notify;
mod platform;
mod risk;
mod trading;
mod tui;
