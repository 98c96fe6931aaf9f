//! The bottom line: the keys of whatever has the focus (a form, a question, the filter
//! being typed, or the tab), as STYLE.md's k9s convention has it.

use super::help::tab_keys;
use super::text::clean;
use super::Theme;
use crate::tui::app::{App, Overlay, Tab};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let keys = |pairs: &[(&str, &str)]| -> Vec<Span<'static>> {
        let mut spans = Vec::new();
        for (k, what) in pairs {
            // The footer names a key by its first spelling; the help lists them all.
            let singles: Vec<&str> = k.split(' ').take(2).take_while(|t| t.chars().count() == 1).collect();
            let k = if singles.is_empty() { k.split(' ').next().unwrap_or(k).to_string() } else { singles.join("/") };
            spans.push(Span::styled(k, theme.key()));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        spans
    };
    let spans = match &app.overlay {
        Overlay::Filter { .. } => {
            let mut s = vec![
                Span::styled("/", theme.key()),
                Span::raw(clean(app.filter().unwrap_or(""))),
                Span::styled("█", theme.key()),
                Span::raw("  "),
            ];
            s.extend(keys(&[("Enter", "keep"), ("Esc", "cancel")]));
            s
        }
        Overlay::Form(_) => keys(&[("Tab", "next field"), ("S-Tab", "previous"), ("←/→", "choose"), ("Enter", "send"), ("Esc", "cancel")]),
        Overlay::Confirm { .. } => keys(&[("y", "yes"), ("n", "no")]),
        Overlay::Help { .. } => keys(&[("j/k", "scroll"), ("Esc", "close")]),
        Overlay::Detail { .. } => keys(&[("j/k", "scroll"), ("Esc", "close")]),
        Overlay::None => {
            // A session is not offered the keys its token may not use: none that change
            // things when read-only, no transfers but an admin's, nothing in a tab it may
            // not read.
            let offered = |k: &str| match k {
                "n" | "c" | "a" => !app.read_only(),
                "d" | "w" => app.may_transfer(),
                _ => true,
            };
            let available = app.tab_available(app.tab);
            let short: Vec<(&str, &str)> =
                tab_keys(app.tab).iter().filter(|(k, _, _)| available && offered(k)).map(|(k, word, _)| (*k, *word)).collect();
            let mut s = keys(&short);
            // Only the tabs with a list to move in.
            if available && matches!(app.tab, Tab::Orders | Tab::Accounts | Tab::Events | Tab::Audit) {
                s.extend(keys(&[("j/k", "move")]));
            }
            s.extend(keys(&[("Tab", "switch"), ("?", "help"), ("q", "quit")]));
            s
        }
    };
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
