//! Enter on a row of Orders, Events or Audit: the whole row in a pop-up, one field a
//! line, wrapped. The tables cut what does not fit their columns (a reject reason, a
//! 64-letter user name, an event's data, an audit record's detail); here nothing is cut.

use super::text::{clean, dec, price, status};
use super::Theme;
use crate::api::Order;
use crate::tui::app::{App, Detail};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;
use serde_json::Value;

/// The pop-up's title and its rows (label, value), or `None` once the row has left the
/// list (an order past the newest 200, an event past the newest 1000).
pub fn rows(app: &App, of: &Detail) -> Option<(String, Vec<(String, String)>)> {
    let row = |label: &str, value: String| (label.to_string(), value);
    match of {
        Detail::Order(id) => {
            let o = app.orders.rows.iter().find(|o| &o.order_id == id)?;
            Some((format!("Order {}", crate::tui::action::short_id(id)), order(app, o)))
        }
        Detail::Event(seq) => {
            let e = app.events.items.iter().find(|e| e.seq == *seq)?;
            let mut rows = vec![
                row("seq", e.seq.to_string()),
                row("time", e.timestamp.clone()),
                row("type", e.kind.clone()),
                row("source", e.source.clone()),
            ];
            rows.push(row("event id", e.event_id.clone()));
            json(&e.data, &mut rows);
            Some((format!("Event {seq}"), rows))
        }
        Detail::Audit(seq) => {
            let r = app.audit.records.iter().find(|r| r.seq == *seq)?;
            let mut rows = vec![
                row("seq", r.seq.to_string()),
                row("time", r.timestamp.clone()),
                row("actor", r.actor.clone()),
                row("action", r.action.clone()),
                row("hash", r.hash.clone()),
                row("prev hash", r.prev_hash.clone()),
            ];
            json(&r.detail, &mut rows);
            Some((format!("Audit record {seq}"), rows))
        }
    }
}

fn order(app: &App, o: &Order) -> Vec<(String, String)> {
    let user = match app.users.iter().find(|u| u.user_id == o.user_id) {
        Some(u) => format!("{} ({})", u.username, o.user_id),
        None => o.user_id.clone(),
    };
    let decimals = app.symbols.iter().find(|i| i.symbol == o.symbol).map(|i| i.tick.normalize().scale());
    let mut rows = vec![
        ("order id", o.order_id.clone()),
        ("user", user),
        ("symbol", o.symbol.clone()),
        ("side", o.side.as_str().to_string()),
        ("type", o.kind.as_str().to_string()),
        ("time in force", o.time_in_force.as_str().to_string()),
        ("price", o.price.map(|p| price(p, decimals)).unwrap_or_else(|| "market".into())),
        ("quantity", dec(o.quantity)),
        ("filled", dec(o.filled_quantity)),
        ("remaining", dec(o.remaining_quantity)),
        ("average price", o.average_price.map(|p| price(p, decimals)).unwrap_or_default()),
        ("status", status(o.status).to_string()),
    ];
    if let Some(r) = &o.reject_reason {
        rows.push(("reason", r.clone()));
    }
    if let Some(c) = &o.client_order_id {
        rows.push(("client id", c.clone()));
    }
    rows.push(("fills", o.fills.len().to_string()));
    rows.push(("created", o.created_at.clone()));
    rows.push(("updated", o.updated_at.clone()));
    rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// An object's fields a row each (nested values as compact JSON, which wraps); anything
/// else as one row.
fn json(v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                rows.push((k.clone(), text));
            }
        }
        Value::Null => {}
        other => rows.push(("detail".into(), other.to_string())),
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, of: &Detail, scroll: usize, theme: Theme) {
    let (title, rows) = rows(app, of).unwrap_or_else(|| ("Gone".into(), vec![("".into(), "no longer in the list".into())]));
    let label_w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).min(20);
    let lines: Vec<Line> = rows
        .iter()
        .skip(scroll)
        .map(|(k, v)| Line::from(vec![Span::styled(format!("{:>label_w$}  ", clean(k)), theme.dim()), Span::raw(clean(v))]))
        .collect();
    let width = 100u16.min(area.width);
    let inner_w = usize::from(width.saturating_sub(2)).max(1);
    let height: usize = lines.iter().map(|l| l.width().div_ceil(inner_w).max(1)).sum();
    let popup = super::centered(area, width, height as u16 + 2);
    frame.render_widget(Clear, popup);
    // Where rows are out of sight, the title says which way they are.
    let up = if scroll > 0 { " · k up" } else { "" };
    let down = if height + 2 > usize::from(area.height) { " · j more" } else { "" };
    let block =
        Block::bordered().title(super::titled([format!(" {title} · Esc closes{up}{down} "), format!(" {title}{up}{down} ")], popup));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), popup);
}
