//! Styles of the dashboard, in one place so that `NO_COLOR` is honoured everywhere.
//!
//! Colour only ever repeats what the words already say (`running`, `FAILED`,
//! `restarted 2×`, `bid`/`ask`, `buy`/`sell`), so the dashboard reads the same without
//! it. Without colour the selection is still reversed video and warnings still bold:
//! `NO_COLOR` asks for no colour, not for no emphasis.

use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty (no-color.org).
    pub fn from_env() -> Theme {
        Theme { color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    /// Healthy, live, filled.
    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }
    /// Restarted, reconnecting, paused: look here.
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    /// Failed, refused, broken.
    pub fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    /// Hints and secondary text.
    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }
    pub fn buy(self) -> Style {
        self.fg(Color::Green)
    }
    pub fn sell(self) -> Style {
        self.fg(Color::Red)
    }
    /// Keys in the footer and the help.
    pub fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub fn header(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub fn active_tab(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }
    pub fn chart(self) -> Style {
        self.fg(Color::Cyan)
    }
}
