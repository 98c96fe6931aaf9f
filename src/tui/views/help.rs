//! The `?` overlay: every key, by where it works. The footer shows the same keys for the
//! current tab, from the same tables, so the two cannot disagree.

use super::Theme;
use crate::tui::app::Tab;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

/// Keys that work on every tab.
pub const GLOBAL: &[(&str, &str)] = &[
    ("q Ctrl-C", "quit"),
    ("Esc", "close, clear, else quit"),
    ("?", "this help"),
    ("Tab S-Tab", "next / previous tab"),
    ("1-6", "go to tab"),
    ("j k ↓ ↑", "move"),
    ("g G", "first / last"),
    ("PgUp PgDn", "page"),
    ("r", "refresh now"),
    ("Enter", "the selected row whole"),
];

/// Keys in forms (new order, amend, deposit, withdraw).
pub const FORM: &[(&str, &str)] = &[
    ("Tab ↓", "next field"),
    ("S-Tab ↑", "previous field"),
    ("← → space", "change a choice"),
    ("Enter", "check and send"),
    ("Esc", "cancel"),
];

/// Keys of one tab: the keys, a word for the footer, and what they do for the help.
pub fn tab_keys(tab: Tab) -> &'static [(&'static str, &'static str, &'static str)] {
    match tab {
        Tab::Overview => &[],
        Tab::Orders => &[
            ("/", "filter", "filter (user: sym: st:)"),
            ("n", "new", "new order"),
            ("c", "cancel", "cancel selected order"),
            ("a", "amend", "amend selected order"),
        ],
        Tab::Book => &[("h l ← →", "symbol", "previous / next symbol"), ("n", "new order", "new order")],
        Tab::Accounts => &[("d", "deposit", "deposit"), ("w", "withdraw", "withdraw"), ("n", "new order", "new order")],
        Tab::Events => &[("space", "pause", "pause / resume"), ("/", "filter", "filter by type")],
        Tab::Audit => &[("v", "verify", "verify the chain again")],
    }
}

fn long(keys: &[(&'static str, &'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    keys.iter().map(|(k, _, what)| (*k, *what)).collect()
}

fn section(title: &'static str, keys: &[(&'static str, &'static str)], theme: Theme, out: &mut Vec<Line<'static>>) {
    if !out.is_empty() {
        out.push(Line::raw(""));
    }
    out.push(Line::styled(title, theme.header()));
    for (k, what) in keys {
        out.push(Line::from(vec![Span::styled(format!("  {k:<11}"), theme.key()), Span::raw(*what)]));
    }
}

/// The two columns of the help: where each key works.
fn columns(theme: Theme) -> (Vec<Line<'static>>, Vec<Line<'static>>) {
    let mut left = Vec::new();
    section("Everywhere", GLOBAL, theme, &mut left);
    section("Orders", &long(tab_keys(Tab::Orders)), theme, &mut left);
    section("Audit", &long(tab_keys(Tab::Audit)), theme, &mut left);
    let mut right = Vec::new();
    section("Book", &long(tab_keys(Tab::Book)), theme, &mut right);
    section("Accounts", &long(tab_keys(Tab::Accounts)), theme, &mut right);
    section("Events", &long(tab_keys(Tab::Events)), theme, &mut right);
    section("Forms", FORM, theme, &mut right);
    (left, right)
}

/// Where the help goes on a screen of `area`: side by side where the terminal is wide
/// enough, else one column (squeezed into two columns of 40, every line was cut); the rows
/// it has, and its pop-up, as tall as they are or the screen.
fn layout(area: Rect) -> (bool, usize, Rect) {
    let (left, right) = columns(Theme { color: false });
    let wide = area.width >= 78;
    let rows = if wide { left.len().max(right.len()) } else { left.len() + 1 + right.len() };
    (wide, rows, super::centered(area, if wide { 78 } else { 40 }, rows as u16 + 2))
}

/// How far the help scrolls on a screen of `area`: until its last row is at the bottom.
/// Further, each key moved an offset nothing showed, and as many took it back.
pub fn max_scroll(area: Rect) -> usize {
    let (_, rows, popup) = layout(area);
    rows.saturating_sub(usize::from(popup.height.saturating_sub(2)))
}

/// The help scrolled down by `scroll` rows (at most [`max_scroll`]) where it is too short.
pub fn draw(frame: &mut Frame, area: Rect, scroll: usize, theme: Theme) {
    let (mut left, right) = columns(theme);
    let (wide, rows, popup) = layout(area);
    if !wide {
        left.push(Line::raw(""));
        left.extend(right.iter().cloned());
    }
    let visible = usize::from(popup.height.saturating_sub(2));
    let scroll = scroll.min(max_scroll(area));
    let up = if scroll > 0 { " · k up" } else { "" };
    let down = if scroll + visible < rows { " · j more" } else { "" };
    frame.render_widget(Clear, popup);
    let title = super::titled(
        [format!(" Keys · Esc or ? closes{up}{down} "), format!(" Keys · Esc closes{up}{down} "), format!(" Keys{up}{down} ")],
        popup,
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let at = (scroll as u16, 0);
    if wide {
        let [l, r] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).spacing(1).areas(inner);
        frame.render_widget(Paragraph::new(left).scroll(at), l);
        frame.render_widget(Paragraph::new(right).scroll(at), r);
    } else {
        frame.render_widget(Paragraph::new(left).scroll(at), inner);
    }
}
