//! Taking over the terminal and giving it back.
//!
//! [`enter`] switches to raw mode and the alternate screen; the [`Screen`] it returns
//! gives both back when dropped, which covers `q`, errors and unwinding. A panic hook
//! restores the terminal before the panic message is printed, so the message is
//! readable, and then ends the process: a panic on a background task would otherwise
//! leave the dashboard drawing into a terminal that is no longer raw.

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::sync::Once;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// The terminal while the dashboard owns it.
pub struct Screen {
    pub terminal: Term,
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode, alternate screen, hidden cursor.
pub fn enter() -> std::io::Result<Screen> {
    install_panic_hook();
    enable_raw_mode()?;
    let screen = execute!(stdout(), EnterAlternateScreen, Hide)
        .and_then(|_| Terminal::new(CrosstermBackend::new(stdout())))
        .map(|terminal| Screen { terminal });
    if screen.is_err() {
        restore();
    }
    screen
}

/// Cooked mode, main screen, visible cursor. Safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, Show);
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
            std::process::exit(101);
        }));
    });
}
