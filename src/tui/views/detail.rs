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

/// The pop-up's width on a screen of `area`, and the rows each of its lines takes there
/// once wrapped (as the paragraph wraps them: words whole, so a long word can take a row
/// more than its width says).
fn layout(lines: &[Line], area: Rect) -> (u16, Vec<usize>) {
    let width = 100u16.min(area.width);
    let inner = width.saturating_sub(2).max(1);
    let rows = lines.iter().map(|l| Paragraph::new(l.clone()).wrap(Wrap { trim: false }).line_count(inner).max(1)).collect();
    (width, rows)
}

fn lines<'a>(rows: &'a [(String, String)], theme: Theme) -> Vec<Line<'a>> {
    let label_w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).min(20);
    rows.iter()
        .map(|(k, v)| Line::from(vec![Span::styled(format!("{:>label_w$}  ", clean(k)), theme.dim()), Span::raw(clean(v))]))
        .collect()
}

/// The first of `heights` (rows of wrapped lines) to show so that the last line sits at
/// the bottom of `visible` rows: scrolling further moved an offset nothing showed, and
/// each key past it had to be taken back before the pop-up moved up again.
fn last_start(heights: &[usize], visible: usize) -> usize {
    let mut used = 0;
    for (i, h) in heights.iter().enumerate().rev() {
        used += h;
        if used > visible {
            // This line does not fit below the rest; a single line taller than the
            // screen is still shown from its start.
            return (i + 1).min(heights.len() - 1);
        }
    }
    0
}

/// How far the detail of `of` scrolls (in rows of the record) on a screen of `area`:
/// until its last line is at the bottom.
pub fn max_scroll(app: &App, of: &Detail, area: Rect) -> usize {
    let Some((_, rows)) = rows(app, of) else { return 0 };
    let (_, heights) = layout(&lines(&rows, Theme { color: false }), area);
    last_start(&heights, usize::from(area.height.saturating_sub(2)))
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, of: &Detail, scroll: usize, theme: Theme) {
    let (title, rows) = rows(app, of).unwrap_or_else(|| ("Gone".into(), vec![("".into(), "no longer in the list".into())]));
    let lines = lines(&rows, theme);
    let (width, heights) = layout(&lines, area);
    let visible = usize::from(area.height.saturating_sub(2));
    let scroll = scroll.min(last_start(&heights, visible));
    let height: usize = heights[scroll..].iter().sum();
    let popup = super::centered(area, width, height as u16 + 2);
    frame.render_widget(Clear, popup);
    // Where rows are out of sight, the title says which way they are.
    let up = if scroll > 0 { " · k up" } else { "" };
    let down = if height > visible { " · j more" } else { "" };
    let block =
        Block::bordered().title(super::titled([format!(" {title} · Esc closes{up}{down} "), format!(" {title}{up}{down} ")], popup));
    let lines: Vec<Line> = lines.into_iter().skip(scroll).collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), popup);
}

#[cfg(test)]
mod tests {
    use super::last_start;

    #[test]
    fn the_detail_scrolls_until_its_last_line_is_at_the_bottom() {
        // Ten one-row lines in four rows: the last four show from the seventh on.
        assert_eq!(last_start(&[1; 10], 4), 6);
        // All of them fit: no scrolling.
        assert_eq!(last_start(&[1; 10], 10), 0);
        assert_eq!(last_start(&[1; 3], 10), 0);
        // Wrapped lines count the rows they take: the last two (3 + 2 rows) fill five.
        assert_eq!(last_start(&[1, 1, 1, 3, 2], 5), 3);
        assert_eq!(last_start(&[1, 1, 1, 3, 2], 4), 4);
        // A last line taller than the screen is shown from its start.
        assert_eq!(last_start(&[1, 1, 9], 4), 2);
        assert_eq!(last_start(&[], 4), 0);
        assert_eq!(last_start(&[1, 1], 0), 1);
    }
}
