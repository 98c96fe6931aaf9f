//! Drawing: one file per tab, plus the chrome every tab shares (tab bar, status line,
//! footer), the help overlay, the forms and the detail of a row. Views read [`App`] and
//! never change it.
//!
//! The screen, top to bottom: the tab bar with the connection state at its right, a
//! status line (daemon version and uptime, health, whether the feeds are behind, role;
//! or a message), the tab's body, and a footer with the keys of what has the focus.
//! Everything is laid out from the frame's size at each draw, so resizes need no
//! handling beyond a redraw.
//!
//! A panel whose data the token may not read ([`App::unavailable`]) says so, with the
//! reason, where the data would be; a tab with nothing to show is dimmed in the tab bar.

mod accounts;
mod audit;
mod book;
pub mod detail;
mod events;
mod footer;
mod form;
pub mod help;
mod orders;
mod overview;
pub mod text;
pub mod theme;

pub use theme::Theme;

use super::action::Fetch;
use super::app::{App, Conn, Overlay, Tab};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Tabs};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, app: &App, theme: Theme) {
    // A message too long for one row (a refusal says what to fix) takes up to three.
    let width = frame.area().width as usize;
    let status_rows = app.flash.as_ref().map_or(1, |f| flash_rows(&f.text, width).len() as u16);
    let [tabs, status, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(status_rows), Constraint::Min(0), Constraint::Length(1)])
            .areas(frame.area());
    tab_bar(frame, tabs, app, theme);
    status_line(frame, status, app, theme);
    match app.tab {
        Tab::Overview => overview::draw(frame, body, app, theme),
        Tab::Orders => orders::draw(frame, body, app, theme),
        Tab::Book => book::draw(frame, body, app, theme),
        Tab::Accounts => accounts::draw(frame, body, app, theme),
        Tab::Events => events::draw(frame, body, app, theme),
        Tab::Audit => audit::draw(frame, body, app, theme),
    }
    footer::draw(frame, footer, app, theme);
    match &app.overlay {
        Overlay::Help { scroll } => help::draw(frame, frame.area(), *scroll, theme),
        Overlay::Form(f) => form::draw(frame, frame.area(), f, theme),
        Overlay::Confirm { question, .. } => form::confirm(frame, frame.area(), question, theme),
        Overlay::Detail { of, scroll } => detail::draw(frame, frame.area(), app, of, *scroll, theme),
        Overlay::Filter { .. } | Overlay::None => {}
    }
}

fn tab_bar(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let (conn, style) = match &app.conn {
        Conn::Live if app.polled() => ("● polling", theme.ok()),
        Conn::Live => ("● live", theme.ok()),
        Conn::Connecting => ("connecting…", theme.warn()),
        Conn::Reconnecting(_) => ("reconnecting…", theme.warn()),
        Conn::Refused(_) => ("✗ token refused", theme.bad()),
    };
    let [left, right] = Layout::horizontal([Constraint::Min(0), Constraint::Length(conn.chars().count() as u16 + 1)]).areas(area);
    // Where every title does not fit, the other tabs shrink to their digit, then the
    // padding goes: cut at the edge, the bar hid the tab on screen (4 to 6 at 40 columns).
    let full = |i: usize, t: &Tab| format!("{} {}", i + 1, t.title());
    let width = |compact: bool, pad: usize| -> usize {
        let titles: usize =
            Tab::ALL.iter().enumerate().map(|(i, t)| if compact && *t != app.tab { 1 } else { full(i, t).chars().count() }).sum();
        titles + Tab::ALL.len() * 2 * pad + Tab::ALL.len() - 1
    };
    let room = usize::from(left.width);
    let compact = width(false, 1) > room;
    let pad = if compact && width(true, 1) > room { "" } else { " " };
    let titles = Tab::ALL.iter().enumerate().map(|(i, t)| {
        let title = if compact && *t != app.tab { (i + 1).to_string() } else { full(i, t) };
        if app.tab_available(*t) {
            Line::raw(title)
        } else {
            Line::styled(title, theme.dim())
        }
    });
    let tabs = Tabs::new(titles).select(app.tab.index()).divider("│").padding(pad, pad).highlight_style(theme.active_tab());
    frame.render_widget(tabs, left);
    frame.render_widget(Paragraph::new(Span::styled(conn, style)).right_aligned(), right);
}

/// A message if there is one, else why we are reconnecting, else who we talk to.
fn status_line(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let room = usize::from(area.width);
    let sep = || Span::styled(" · ", theme.dim());
    let line = if let Some(flash) = &app.flash {
        let style = if flash.error { theme.bad() } else { theme.ok() };
        let rows = flash_rows(&flash.text, room).into_iter().map(|row| Line::styled(row, style));
        frame.render_widget(Paragraph::new(rows.collect::<Vec<_>>()), area);
        return;
    } else if let Conn::Reconnecting(why) = &app.conn {
        fitted([Line::from(vec![Span::styled("reconnecting… ", theme.warn()), Span::styled(text::clean(why), theme.dim())])], room)
    } else if let Conn::Refused(why) = &app.conn {
        let why = Span::styled(text::clean(why), theme.bad());
        let hint = Span::styled(" · q quits; start agt tui again with a valid token", theme.dim());
        fitted([Line::from(vec![why.clone(), hint]), Line::from(why)], room)
    } else if let Some(e) = app.refresh_error() {
        let what = vec![Span::styled("not refreshed: ", theme.bad()), Span::styled(text::clean(e), theme.warn())];
        let mut full = what.clone();
        full.push(Span::styled(" · showing the last data", theme.dim()));
        fitted([Line::from(full), Line::from(what)], room)
    } else {
        // Where the whole line does not fit, the endpoint (the longest) goes first, then
        // the version, then the uptime: health and who we are (role, name, read-only)
        // stay longest.
        let form = |version: bool, endpoint: bool, uptime: bool| -> Line<'static> {
            let mut spans = Vec::new();
            let part = |spans: &mut Vec<Span<'static>>, more: Vec<Span<'static>>| {
                if !spans.is_empty() {
                    spans.push(sep());
                }
                spans.extend(more);
            };
            match &app.health {
                Some(h) => {
                    if version {
                        part(&mut spans, vec![Span::raw(format!("agt {}", h.version))]);
                    }
                    if uptime {
                        part(
                            &mut spans,
                            vec![Span::styled("up ", theme.dim()), Span::raw(text::duration(app.daemon_uptime().unwrap_or(0)))],
                        );
                    }
                    let health = if h.status == "healthy" {
                        Span::styled("healthy", theme.ok())
                    } else {
                        Span::styled(h.status.to_uppercase(), theme.bad())
                    };
                    part(&mut spans, vec![health]);
                }
                None => part(&mut spans, vec![Span::raw("agt")]),
            }
            // Kept in every form, beside health: what the tab shows is not current.
            if let Some(n) = app.feeds_behind() {
                part(&mut spans, vec![Span::styled(format!("feeds {n}+ events behind"), theme.warn())]);
            }
            if endpoint {
                part(&mut spans, vec![Span::raw(text::clean(&app.settings.endpoint))]);
            }
            if let Some(role) = app.role {
                part(&mut spans, vec![Span::raw(role.as_str())]);
            }
            let mut tail = Vec::new();
            if app.read_only() {
                tail.push(sep());
                tail.push(Span::styled("read-only", theme.warn()));
            }
            // Whose orders and account a trader's dashboard shows: a long name is cut to
            // the room left (8 letters at least), marked, where it wrapped whole onto a
            // row nobody sees.
            if let Some(u) = app.own_user() {
                let used: usize = spans.iter().chain(&tail).map(|s| s.width()).sum::<usize>() + 1;
                let name = room.saturating_sub(used).max(8);
                spans.push(Span::raw(format!(" {}", text::cut(&text::clean(&u.username), name))));
            }
            spans.extend(tail);
            Line::from(spans)
        };
        fitted([form(true, true, true), form(true, false, true), form(false, false, true), form(false, false, false)], room)
    };
    // Not wrapped: on one row, wrapping moved whole words onto a row nobody sees, where a
    // line cut at the edge (marked) shows all it can.
    frame.render_widget(Paragraph::new(line), area);
}

/// The rows a message takes in the status area at `width` columns: words wrapped whole, up
/// to three rows, the last ending in `…` where the message needs more. Wrapped here, not
/// by ratatui, so the area is exactly as tall as the rows and a cut is marked.
fn flash_rows(message: &str, width: usize) -> Vec<String> {
    text::wrap(&text::clean(message), width, 3)
}

/// A block title that fits the top border of `area`: the first of `forms` (longest first,
/// then shorter wordings) that fits whole, else the last cut with a `…`. ratatui cuts a
/// title at the corner without a mark, and the reader could not tell that words were missing.
pub fn titled<'a>(forms: impl IntoIterator<Item = impl Into<Line<'a>>>, area: Rect) -> Line<'a> {
    fitted(forms, usize::from(area.width.saturating_sub(2)))
}

/// The first of `forms` (longest first) no wider than `room` columns, else the last cut
/// to them with a `…`: titles, the status line and the footer, which ratatui would cut
/// at the edge without a mark.
pub fn fitted<'a>(forms: impl IntoIterator<Item = impl Into<Line<'a>>>, room: usize) -> Line<'a> {
    let mut last = Line::default();
    for form in forms {
        last = form.into();
        if last.width() <= room {
            return last;
        }
    }
    cut_line(last, room)
}

/// [`titled`] with one form: cut with a `…` where it does not fit.
pub fn title<'a>(title: impl Into<Line<'a>>, area: Rect) -> Line<'a> {
    titled([title], area)
}

/// `line` cut to `room` columns, the last of them a `…`, each span keeping its style.
fn cut_line(line: Line<'_>, room: usize) -> Line<'_> {
    use unicode_width::UnicodeWidthChar;
    if room == 0 {
        return Line::default();
    }
    let mut used = 0;
    let mut spans = Vec::new();
    for span in line.spans {
        let mut text = String::new();
        for c in span.content.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > room - 1 {
                break;
            }
            used += w;
            text.push(c);
        }
        let full = text.len() == span.content.len();
        spans.push(Span::styled(text, span.style));
        if !full {
            break;
        }
    }
    spans.push(Span::raw("…"));
    Line::from(spans).style(line.style)
}

/// A `w`×`h` rectangle in the middle of `area`, shrunk to fit.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// The rows of a long table that a bordered block `area` with a header shows, keeping
/// `selected` in view the way ratatui scrolls (the selection on the last row once it
/// passes the bottom), and the selection's index within them. Only these rows are
/// built: a 1000-event list under load would otherwise be formatted whole, 20 times a
/// second, to show 35 lines of it.
/// [`window`] for the tab's own list, noting the rows it shows for PgUp and PgDn
/// ([`App::list_rows`]).
pub fn list_window(app: &App, len: usize, selected: usize, area: Rect) -> (std::ops::Range<usize>, usize) {
    app.list_rows.set((area.height as usize).saturating_sub(3).max(1));
    window(len, selected, area)
}

pub fn window(len: usize, selected: usize, area: Rect) -> (std::ops::Range<usize>, usize) {
    let height = (area.height as usize).saturating_sub(3).max(1);
    let selected = selected.min(len.saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    (start..len.min(start + height), selected - start)
}

/// "not available to a trader token: why", when the token may not read `key`.
pub fn denied(app: &App, key: &Fetch) -> Option<String> {
    app.unavailable(key).map(|why| format!("not available to {}: {}", app.who(), text::clean(why)))
}

/// A whole panel the token may not read: its title, and in the middle what is missing,
/// why (the daemon's words or the role's rule) and, dimmer, what to do instead.
pub fn unavailable(frame: &mut Frame, area: Rect, title: &str, what: &str, why: &str, instead: &str, theme: Theme) {
    let block = Block::bordered().title(self::title(format!(" {title} "), area));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = vec![
        Line::styled(what.to_string(), theme.warn()),
        Line::styled(text::clean(why), theme.dim()),
        Line::raw(""),
        Line::styled(instead.to_string(), theme.dim()),
    ];
    // Centred on the rows the lines take once wrapped (about: words wrap whole), and
    // given every row below, so a longer wrap is not cut.
    let width = inner.width.max(1) as usize;
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(width).max(1)).sum();
    let y = inner.y + inner.height.saturating_sub(rows as u16) / 2;
    let area = Rect { y, height: inner.bottom() - y, ..inner };
    frame.render_widget(Paragraph::new(lines).centered().wrap(ratatui::widgets::Wrap { trim: true }), area);
}

/// A one-line notice in the middle of an empty area ("no orders yet").
pub fn notice(frame: &mut Frame, area: Rect, text: &str, style: ratatui::style::Style) {
    if area.height == 0 {
        return;
    }
    let y = area.y + area.height / 2;
    let line = Rect { x: area.x, y, width: area.width, height: 1 };
    frame.render_widget(Paragraph::new(Span::styled(text.to_string(), style)).centered(), line);
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn the_window_follows_the_selection() {
        let area = Rect::new(0, 0, 80, 13); // 10 rows under the header
        assert_eq!(window(1000, 0, area), (0..10, 0));
        assert_eq!(window(1000, 9, area), (0..10, 9));
        assert_eq!(window(1000, 10, area), (1..11, 9));
        assert_eq!(window(5, 3, area), (0..5, 3));
        assert_eq!(window(0, 0, area), (0..0, 0));
        assert_eq!(window(3, 0, Rect::new(0, 0, 80, 2)), (0..1, 0));
    }
}
