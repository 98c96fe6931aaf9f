//! Events: the live event stream, newest first, with a one-line summary of each
//! event's data. Space pauses it (arrivals are held, not lost); `/` filters by type.
//! A polled session (a trader's, or one the daemon refuses the stream) says so instead.

use super::text::{clean, clock, cut};
use super::Theme;
use crate::api::Event;
use crate::tui::app::{App, Feed};
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
    let mut title = vec![Span::raw(format!(" Events · {} shown · ", visible.len()))];
    if ev.paused {
        title.push(Span::styled(format!("PAUSED ({} new)", ev.held.len()), theme.warn()));
    } else {
        title.push(Span::styled("following", theme.ok()));
    }
    if !ev.filter.is_empty() {
        title.push(Span::raw(" · type: "));
        title.push(Span::styled(clean(&ev.filter), theme.warn()));
    }
    title.push(Span::raw(format!(" · seq {} ", app.last_seq)));
    let block = Block::bordered().title(super::title(Line::from(title), area));
    if visible.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = if ev.items.is_empty() { "waiting for events…" } else { "no event matches the filter · Esc clears it" };
        super::notice(frame, inner, text, theme.dim());
        return;
    }
    let wide = area.width >= 110;
    // Borders, the highlight mark, the fixed columns and one space between columns.
    let detail_w = area.width.saturating_sub(2 + 2 + 8 + 8 + 20 + if wide { 8 + 4 } else { 3 }) as usize;
    let (shown, selected) = super::window(visible.len(), ev.selected, area);
    let rows = visible[shown].iter().map(|e| {
        let style = match e.kind.as_str() {
            "SERVICE_FAILED" | "ORDER_REJECTED" | "NOTIFICATION_FAILED" => theme.bad(),
            "SERVICE_RESTARTED" | "TRADING_STATE_CHANGED" => theme.warn(),
            "TRADE_EXECUTED" => theme.ok(),
            _ => ratatui::style::Style::new(),
        };
        let mut cells =
            vec![Cell::from(e.seq.to_string()), Cell::from(clock(&e.timestamp).to_string()), Cell::from(clean(&e.kind)).style(style)];
        if wide {
            cells.push(Cell::from(clean(&e.source)));
        }
        cells.push(Cell::from(cut(&clean(&summary(e)), detail_w)));
        Row::new(cells)
    });
    let mut widths = vec![Constraint::Length(8), Constraint::Length(8), Constraint::Length(20)];
    let mut header = vec!["SEQ", "TIME", "TYPE"];
    if wide {
        widths.push(Constraint::Length(8));
        header.push("SOURCE");
    }
    widths.push(Constraint::Min(0));
    header.push("DATA");
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    // Following: no highlight, the newest on top. Scrolled: the selected event.
    let selected = (ev.selected > 0 || ev.paused).then_some(selected);
    frame.render_stateful_widget(table, area, &mut TableState::default().with_selected(selected));
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
