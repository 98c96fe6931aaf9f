//! Events: the live event stream, newest first, with a one-line summary of each
//! event's data. Space pauses it (arrivals are held, not lost); `/` filters by type.
//! A trader's shows its own user's events, all its stream holds; a session the daemon
//! refuses the stream says so instead.

use super::text::{clean, clock, column_widths, cut, duration, fit, share};
use super::Theme;
use crate::api::Event;
use crate::tui::app::{App, Conn, Feed};
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;
use serde_json::Value;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    if let Feed::Polled(why) = &app.feed {
        let what = format!("The dashboard does not follow the event stream for {}.", app.who());
        let instead = "Orders, Book and Accounts are fetched again every second instead.";
        super::unavailable(frame, area, "Events", &what, why, instead, theme);
        return;
    }
    let ev = &app.events;
    let visible = app.visible_events();
    // Where the whole title does not fit, the sequence number goes first, then the count,
    // then the failed tries: whether the stream is followed stays in sight.
    let title = |count: bool, seq: bool, tries: bool| {
        let mut title = vec![Span::raw(" Events · ")];
        if count {
            title.push(Span::raw(format!("{} shown · ", visible.len())));
        }
        // Whose they are, where the stream holds one user's alone (as Orders says).
        if let Some(u) = app.own_user().filter(|_| app.feed == Feed::Own) {
            title.push(Span::raw(format!("{}'s own · ", clean(&u.username))));
        }
        title.extend(state(app, tries, theme));
        if !ev.filter.is_empty() {
            title.push(Span::raw(" · type: "));
            title.push(Span::styled(clean(&ev.filter), theme.warn()));
        }
        title.push(Span::raw(if seq { format!(" · seq {} ", app.last_seq) } else { " ".into() }));
        Line::from(title)
    };
    let block = Block::bordered().title(super::titled(
        [title(true, true, true), title(true, false, true), title(false, false, true), title(false, false, false)],
        area,
    ));
    if visible.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = if ev.items.is_empty() { "waiting for events…" } else { "no event matches the filter · Esc clears it" };
        super::notice(frame, inner, text, theme.dim());
        return;
    }
    let wide = area.width >= 110;
    // Following: no highlight, the newest on top. Scrolled: the selected event.
    let (shown, selected) = super::list_window(app, visible.len(), ev.selected, area);
    let selected = (ev.selected > 0 || ev.paused).then_some(selected);
    let reserved = if selected.is_some() { 2 } else { 0 };
    let inner = block.inner(area);
    let cells = |e: &Event| [e.seq.to_string(), clock(&e.timestamp).to_string(), clean(&e.kind), clean(&e.source), clean(&summary(e))];
    // SEQ, TIME, TYPE, SOURCE, DATA. Wide: every column, TYPE as wide as the longest type.
    // Narrow: the type first, then the sequence number, the data (at least 10), the time;
    // what does not fit is cut with `…` or left out (see `share`), whole in the event's
    // detail (Enter).
    let needs: [usize; 5] = if wide {
        [8, 8, type_width(), 8, 0]
    } else {
        let seqs: Vec<String> = visible.iter().map(|e| e.seq.to_string()).collect();
        let seq = fit(seqs.iter().map(String::as_str), 3, 8);
        [seq, 8, fit(visible.iter().map(|e| e.kind.as_str()), 4, type_width()), 0, 10]
    };
    let room = usize::from(inner.width.saturating_sub(reserved));
    let needs = if wide { needs.to_vec() } else { share(room, &needs, 6, &[2, 0, 4, 1]) };
    // The SOURCE column is only in the wide layout: `share` never ranks it, so it gets 0.
    let cols: Vec<usize> = (0..5).filter(|&i| wide || needs[i] > 0).collect();
    let widths: Vec<Constraint> =
        cols.iter().map(|&i| if i == 4 { Constraint::Min(0) } else { Constraint::Length(needs[i] as u16) }).collect();
    let w = column_widths(inner, &widths, reserved);
    let rows = visible[shown].iter().map(|e| {
        let c = cells(e);
        let style = match e.kind.as_str() {
            "SERVICE_FAILED" | "ORDER_REJECTED" | "NOTIFICATION_FAILED" => theme.bad(),
            "SERVICE_RESTARTED" | "TRADING_STATE_CHANGED" => theme.warn(),
            "TRADE_EXECUTED" => theme.ok(),
            _ => ratatui::style::Style::new(),
        };
        let style = |i: usize| if i == 2 { style } else { ratatui::style::Style::new() };
        Row::new(cols.iter().zip(&w).map(|(&i, &width)| Cell::from(cut(&c[i], width)).style(style(i))).collect::<Vec<_>>())
    });
    const HEADERS: [&str; 5] = ["SEQ", "TIME", "TYPE", "SOURCE", "DATA"];
    let header = cols.iter().zip(&w).map(|(&i, &width)| cut(HEADERS[i], width));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    frame.render_stateful_widget(table, area, &mut TableState::default().with_selected(selected));
}

/// What the stream is doing, as the title says it: "following" only while events come
/// live; reconnecting (for how long, after how many failed tries) while the daemon is away
/// or restarting, as the tab bar says; and a pause's held count besides.
fn state(app: &App, tries: bool, theme: Theme) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let ev = &app.events;
    if ev.paused {
        spans.push(Span::styled(format!("PAUSED ({} new)", ev.held_count), theme.warn()));
    }
    let stream = match &app.conn {
        Conn::Live if ev.paused => None,
        Conn::Live => Some(Span::styled("following", theme.ok())),
        Conn::Connecting => Some(Span::styled("connecting…", theme.warn())),
        Conn::Reconnecting(_) => {
            let mut text = format!("reconnecting… {}", duration(app.away_for().unwrap_or(0)));
            match app.failed_tries() {
                _ if !tries => {}
                0 => {}
                1 => text.push_str(", 1 try failed"),
                n => text.push_str(&format!(", {n} tries failed")),
            }
            Some(Span::styled(text, theme.warn()))
        }
        Conn::Refused(_) => Some(Span::styled("stopped: token refused", theme.bad())),
    };
    if let Some(s) = stream {
        if !spans.is_empty() {
            spans.push(Span::raw(" · "));
        }
        spans.push(s);
    }
    spans
}

/// The width of the longest event type (`TRADING_STATE_CHANGED`): a column of 20 cut it
/// without a mark.
fn type_width() -> usize {
    crate::services::bus::EVENT_TYPES.iter().map(|t| t.len()).max().unwrap_or(20)
}

/// The fields that say what happened, `key=value`, in a fixed order, then the rest.
pub fn summary(e: &Event) -> String {
    const FIRST: &[&str] =
        &["username", "service", "symbol", "side", "quantity", "price", "status", "asset", "amount", "from", "to", "reason", "error"];
    let Value::Object(map) = &e.data else { return e.data.to_string() };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut parts: Vec<String> = Vec::new();
    for k in FIRST {
        if let Some(v) = map.get(*k).and_then(scalar) {
            parts.push(format!("{k}={v}"));
        }
    }
    for (k, v) in map {
        if FIRST.contains(&k.as_str()) || k.ends_with("_at") {
            continue;
        }
        if let Some(v) = scalar(v) {
            // Ids are long; their first characters are enough to tell them apart.
            let v = if k.ends_with("_id") { crate::tui::action::short_id(&v).to_string() } else { v };
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}
