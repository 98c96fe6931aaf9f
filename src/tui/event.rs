//! One channel for everything that happens: keys and resizes from the terminal, a tick
//! a second, SIGTERM/SIGHUP, and (sent by [`super::net`]) the daemon's events and
//! answers. The event loop reads only this channel, in arrival order.
//!
//! The terminal is read on its own thread because crossterm's reader blocks; it waits
//! in `poll` (a `poll(2)` on the tty, no busy loop) and looks at the stop flag four times
//! a second so it ends with the dashboard.

use super::action::Action;
use crossterm::event::{self as term, KeyEventKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How often the clock ticks: uptimes, per-second rates, the metrics sample.
pub const TICK: Duration = Duration::from_secs(1);
/// How long the input thread waits for a key before looking at the stop flag.
const INPUT_POLL: Duration = Duration::from_millis(250);

pub struct Events {
    tx: UnboundedSender<Action>,
    rx: UnboundedReceiver<Action>,
    /// Tells the input thread to end.
    stop: Arc<AtomicBool>,
}

impl Events {
    pub fn new() -> Events {
        let (tx, rx) = unbounded_channel();
        Events { tx, rx, stop: Arc::new(AtomicBool::new(false)) }
    }

    /// A sender for the net side.
    pub fn sender(&self) -> UnboundedSender<Action> {
        self.tx.clone()
    }

    /// Starts the terminal reader, the tick and the signal watchers. Call inside the
    /// runtime.
    pub fn start(&self) -> std::io::Result<()> {
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        std::thread::Builder::new().name("agt-tui-input".into()).spawn(move || read_terminal(tx, stop))?;

        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await; // the first tick is immediate; start counting a second from now
            loop {
                every.tick().await;
                if tx.send(Action::Tick).is_err() {
                    return;
                }
            }
        });

        use tokio::signal::unix::{signal, SignalKind};
        for kind in [SignalKind::terminate(), SignalKind::hangup()] {
            let mut sig = signal(kind)?;
            let tx = self.tx.clone();
            tokio::spawn(async move {
                if sig.recv().await.is_some() {
                    let _ = tx.send(Action::Quit);
                }
            });
        }
        Ok(())
    }

    /// The next action; waits.
    pub async fn next(&mut self) -> Option<Action> {
        self.rx.recv().await
    }

    /// The next action if one is already waiting.
    pub fn try_next(&mut self) -> Option<Action> {
        self.rx.try_recv().ok()
    }
}

impl Default for Events {
    fn default() -> Events {
        Events::new()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_terminal(tx: UnboundedSender<Action>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match term::poll(INPUT_POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let action = match term::read() {
            // Terminals that report releases would otherwise type every key twice.
            Ok(term::Event::Key(k)) if k.kind != KeyEventKind::Release => Action::Key(k),
            Ok(term::Event::Resize(w, h)) => Action::Resize(w, h),
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(action).is_err() {
            return;
        }
    }
}
