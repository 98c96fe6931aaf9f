//! The bottom line: the keys of whatever has the focus (a form, a question, the filter
//! being typed, or the tab), as STYLE.md's k9s convention has it.
//!
//! Where they do not all fit (40 columns), the last ones (help and quit, or what closes
//! the overlay) stay and the ones before them give way to a `…`: cut at the edge, the
//! line lost `? help`, the key that lists the rest, and nothing said keys were missing.

use super::fitted;
use super::help::tab_keys;
use super::text::{clean, filter_prompt};
use super::Theme;
use crate::tui::app::{App, Overlay, Tab};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let room = usize::from(area.width);
    let (pairs, keep) = hints(app);
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
    // to none of them.
    let forms: Vec<Vec<Span<'static>>> = (0..=kept)
        .rev()
        .map(|n| {
            let mut spans = keys(&pairs[..n]);
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
            spans
        })
        .collect();
    let prefix = match &app.overlay {
        // The filter being typed comes first, and keeps its cursor in sight: it gets what
        // the fewest keys leave (all the line if that is under `MIN_PROMPT`), its tail shown
        // where it is longer.
        Overlay::Filter { .. } => {
            let fewest = forms.last().map_or(0, |f| Line::from(f.clone()).width() + 2);
            let (prompt_room, with_keys) = if room >= fewest + MIN_PROMPT { (room - fewest, true) } else { (room, false) };
            let text = filter_prompt(&clean(app.filter().unwrap_or("")), prompt_room);
            let mut prefix = vec![Span::styled("/", theme.key()), Span::raw(text), Span::styled("█", theme.key())];
            if !with_keys {
                frame.render_widget(Paragraph::new(Line::from(prefix)), area);
                return;
            }
            prefix.push(Span::raw("  "));
            prefix
        }
        _ => vec![],
    };
    let forms = forms.into_iter().map(|keys| {
        let mut spans = prefix.clone();
        spans.extend(keys);
        Line::from(spans)
    });
    // The last is cut, marked, where even that does not fit.
    frame.render_widget(Paragraph::new(fitted(forms, room)), area);
}

/// The fewest columns the filter being typed gets beside the keys (`/`, `…`, a letter and
/// the cursor); on a narrower line it takes the whole line and the keys give way.
const MIN_PROMPT: usize = 4;

/// What the footer offers: the keys with a word each, and how many of the last ones stay
/// when there is no room. The filter being typed goes before them (`draw`).
fn hints(app: &App) -> (Vec<(&'static str, &'static str)>, usize) {
    match &app.overlay {
        Overlay::Filter { .. } => (vec![("Enter", "keep"), ("Esc", "cancel")], 1),
        Overlay::Form(_) => {
            (vec![("Tab", "next field"), ("S-Tab", "previous"), ("←/→", "choose"), ("Enter", "send"), ("Esc", "cancel")], 1)
        }
        Overlay::Confirm { .. } => (vec![("y", "yes"), ("n", "no")], 1),
        Overlay::Help { .. } | Overlay::Detail { .. } => (vec![("j/k", "scroll"), ("Esc", "close")], 1),
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
            // Space pauses the Events tab, and resumes it once paused: the footer says which.
            let word = |k: &str, word: &'static str| match k {
                "space" if app.events.paused => "resume",
                _ => word,
            };
            let mut pairs: Vec<(&str, &str)> =
                tab_keys(app.tab).iter().filter(|(k, _, _)| available && offered(k)).map(|(k, w, _)| (*k, word(k, w))).collect();
            // Only the tabs with a list to move in.
            if available && matches!(app.tab, Tab::Orders | Tab::Accounts | Tab::Events | Tab::Audit) {
                pairs.push(("j/k", "move"));
            }
            pairs.extend([("Tab", "switch"), ("?", "help"), ("q", "quit")]);
            (pairs, 2)
        }
    }
}
