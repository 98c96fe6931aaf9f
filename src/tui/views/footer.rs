//! The bottom line: the keys of whatever has the focus (a form, a question, the filter
//! being typed, or the tab), as STYLE.md's k9s convention has it.
//!
//! Where they do not all fit (40 columns), the last ones (help and quit, or what closes
//! the overlay) stay and the ones before them give way to a `…`: cut at the edge, the
//! line lost `? help`, the key that lists the rest, and nothing said keys were missing.

use super::fitted;
use super::help::tab_keys;
use super::text::clean;
use super::Theme;
use crate::tui::app::{App, Overlay, Tab};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let (prefix, pairs, keep) = hints(app, theme);
    let keys = |pairs: &[(&str, &str)]| -> Vec<Span<'static>> {
        let mut spans = Vec::new();
        for (i, (k, what)) in pairs.iter().enumerate() {
            if i > 0 {
                spans.push(Span::raw("  "));
            }
            // The footer names a key by its first spelling; the help lists them all.
            let singles: Vec<&str> = k.split(' ').take(2).take_while(|t| t.chars().count() == 1).collect();
            let k = if singles.is_empty() { k.split(' ').next().unwrap_or(k).to_string() } else { singles.join("/") };
            spans.push(Span::styled(k, theme.key()));
            spans.push(Span::raw(format!(" {what}")));
        }
        spans
    };
    let kept = pairs.len() - keep.min(pairs.len());
    // All the keys, then fewer of the first ones with a `…` where the others were, down
    // to none of them; the last is cut, marked, where even that does not fit.
    let forms = (0..=kept).rev().map(|n| {
        let mut spans = prefix.clone();
        spans.extend(keys(&pairs[..n]));
        if n < kept {
            if n > 0 {
                spans.push(Span::raw("  "));
            }
            spans.push(Span::styled("…", theme.dim()));
        }
        if !pairs[kept..].is_empty() && (n > 0 || n < kept) {
            spans.push(Span::raw("  "));
        }
        spans.extend(keys(&pairs[kept..]));
        Line::from(spans)
    });
    frame.render_widget(Paragraph::new(fitted(forms, usize::from(area.width))), area);
}

/// What the footer offers: what comes before the keys (the filter being typed), the
/// keys with a word each, and how many of the last ones stay when there is no room.
fn hints(app: &App, theme: Theme) -> (Vec<Span<'static>>, Vec<(&'static str, &'static str)>, usize) {
    match &app.overlay {
        Overlay::Filter { .. } => {
            let prefix = vec![
                Span::styled("/", theme.key()),
                Span::raw(clean(app.filter().unwrap_or(""))),
                Span::styled("█", theme.key()),
                Span::raw("  "),
            ];
            (prefix, vec![("Enter", "keep"), ("Esc", "cancel")], 1)
        }
        Overlay::Form(_) => {
            (vec![], vec![("Tab", "next field"), ("S-Tab", "previous"), ("←/→", "choose"), ("Enter", "send"), ("Esc", "cancel")], 1)
        }
        Overlay::Confirm { .. } => (vec![], vec![("y", "yes"), ("n", "no")], 1),
        Overlay::Help { .. } | Overlay::Detail { .. } => (vec![], vec![("j/k", "scroll"), ("Esc", "close")], 1),
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
            let mut pairs: Vec<(&str, &str)> =
                tab_keys(app.tab).iter().filter(|(k, _, _)| available && offered(k)).map(|(k, word, _)| (*k, *word)).collect();
            // Only the tabs with a list to move in.
            if available && matches!(app.tab, Tab::Orders | Tab::Accounts | Tab::Events | Tab::Audit) {
                pairs.push(("j/k", "move"));
            }
            pairs.extend([("Tab", "switch"), ("?", "help"), ("q", "quit")]);
            (vec![], pairs, 2)
        }
    }
}
