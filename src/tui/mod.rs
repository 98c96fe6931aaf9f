//! The terminal dashboard, `agt tui` (DESIGN.md §6), built the way ratatui's component
//! template is: state with a pure update, one channel of actions, views that only draw.
//!
//! # Layout
//!
//! - [`action`]: what can happen ([`action::Action`]) and what the state asks for
//!   ([`action::Effect`]).
//! - [`app`]: the state and `update(Action) -> Vec<Effect>`; no I/O.
//! - [`form`]: the forms' fields, keys and validation.
//! - [`rates`]: the Overview's sparkline histories.
//! - [`event`]: the one channel: terminal input, a 1 s tick, signals, the daemon.
//! - [`net`]: follows `/api/events?follow=true`, fetches snapshots, sends commands,
//!   through the CLI's [`Client`].
//! - [`terminal`]: raw mode and the alternate screen, restored on every exit, panics too.
//! - [`views`]: one file per tab, plus the help, the footer and the forms.
//!
//! # The loop
//!
//! [`run`] reads actions from the channel, applies them (taking everything already
//! queued before drawing, so a burst of events costs one frame), hands the effects to
//! the net side, and draws only when something changed and at most every [`FRAME`]
//! (20 fps). Snapshots are fetched when an event made them stale and a visible view
//! shows them, at most every [`DEBOUNCE`]; only the Overview's metrics are polled, once a
//! second while it is on screen. Idle, the dashboard wakes once a second to tick.
//!
//! # Roles
//!
//! Over TCP the token's role is probed on connect (`GET /api/tokens` answers only
//! admins, the event stream only readers). A viewer's session, or one started with
//! `--read-only`, refuses `n`, `c`, `a`, `d` and `w` with a message instead of sending
//! something the daemon would refuse; the status line says `read-only`. Anything the
//! daemon still refuses shows the daemon's own message.
//!
//! A trader's token may not read the services' details or the audit log (DESIGN.md §4),
//! and its event stream holds only its own user's events, not the market's the Book tab
//! follows. Its session follows that stream and is polled besides (`● polling`): Orders,
//! Book and Accounts show its own orders, its own account (the one user its `GET
//! /api/users` lists) and the market, fetched again every second while their tab is
//! shown; Events shows its own events as they come, filtered and paused as an admin's;
//! Overview shows the services' states from `/health` and the public metrics; Audit
//! says the role may not read it, and is not asked for. `d` and `w` are refused with a
//! message (deposits are an admin's); `n`, `c` and `a` work on its own orders.
//!
//! # Limits
//!
//! An amend that neither fills nor changes status publishes no event, so another
//! client's quiet amend shows up with the next order event or `r`. The Orders tab holds
//! the newest 200 orders, the Events tab the newest 1000 events.

pub mod action;
pub mod app;
pub mod event;
pub mod form;
pub mod net;
pub mod rates;
pub mod terminal;
pub mod views;

#[cfg(test)]
mod fixture;

use crate::client::Client;
use action::Action;
use app::{App, Settings};
use event::Events;
use net::Wire;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;
use views::Theme;

/// The shortest time between two frames: at most 20 redraws a second.
pub const FRAME: Duration = Duration::from_millis(50);
/// The shortest time between two rounds of snapshot fetches.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The most queued actions applied before a frame is drawn, so keys stay responsive
/// under a flood of events.
const BATCH: usize = 5000;

/// `agt tui` options.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = "Inside: ? lists every key, q or Ctrl-C quits.\n\
Over --url, a viewer's token makes a read-only session, and a trader's a session of its own\n\
orders, account and events and the market, polled every second.\n\
Colour follows NO_COLOR.")]
pub struct Options {
    /// Never send a change (orders, transfers), even with a token that may
    #[arg(long)]
    pub read_only: bool,
    /// The symbol the Book tab opens on [default: the first instrument]
    #[arg(long, value_name = "SYMBOL")]
    pub symbol: Option<String>,
}

/// Runs the dashboard until the user quits. The terminal is restored however it ends.
pub fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("agt tui needs a terminal; scripts can use the other commands with -o json");
    }
    let settings = Settings { endpoint: client.endpoint().to_string(), read_only: opts.read_only, symbol: opts.symbol };
    let theme = Theme::from_env();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut screen = terminal::enter()?;
        let mut events = Events::new();
        events.start()?;
        let wire = Wire::new(client, events.sender());
        wire.follow();
        event_loop(&mut screen.terminal, App::new(settings), &mut events, &wire, theme).await
        // `screen` drops here: the terminal is given back before any error is printed.
    })
}

async fn event_loop(term: &mut terminal::Term, mut app: App, events: &mut Events, wire: &Wire, theme: Theme) -> anyhow::Result<()> {
    let mut last_frame: Option<Instant> = None;
    let mut last_flush: Option<Instant> = None;
    let mut flush_at: Option<Instant> = None;
    let size = term.size()?;
    apply(&mut app, Action::Resize(size.width, size.height), wire);
    loop {
        let now = Instant::now();
        if app.dirty && last_frame.is_none_or(|t| now >= t + FRAME) {
            term.draw(|f| views::draw(f, &app, theme))?;
            app.dirty = false;
            last_frame = Some(now);
        }
        let frame_at = app.dirty.then(|| last_frame.map_or(now, |t| t + FRAME));
        if flush_at.is_none() && app.wants_flush() {
            flush_at = Some(last_flush.map_or(now, |t| (t + DEBOUNCE).max(now)));
        }
        tokio::select! {
            action = events.next() => {
                let Some(action) = action else { break };
                apply(&mut app, action, wire);
                for _ in 0..BATCH {
                    let Some(action) = events.try_next() else { break };
                    apply(&mut app, action, wire);
                }
            }
            _ = sleep_until(frame_at) => {}
            _ = sleep_until(flush_at) => {
                flush_at = None;
                last_flush = Some(Instant::now());
                apply(&mut app, Action::Flush, wire);
            }
        }
        if app.quit {
            break;
        }
    }
    Ok(())
}

fn apply(app: &mut App, action: Action, wire: &Wire) {
    for effect in app.update(action) {
        wire.perform(effect);
    }
}

/// Sleeps until `at`, or forever without one (a `select!` branch that never fires).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
