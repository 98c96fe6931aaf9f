//! Orders: the newest orders of every user (a trader's own only), live, with the
//! selected one ready for `c` (cancel) and `a` (amend). Wider terminals get more columns.

use super::text::{clean, clock, column_widths, cut, dec, fit, price, status};
use super::Theme;
use crate::api::{OrderStatus, Side};
use crate::tui::action::{short_id, Fetch};
use crate::tui::app::App;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let visible = app.visible_orders();
    let mut title = vec![Span::raw(format!(" Orders · {} of {}", visible.len(), app.orders.rows.len()))];
    if let Some(u) = app.own_user() {
        title.push(Span::raw(format!(" · {}'s own", clean(&u.username))));
    }
    if !app.orders.filter.is_empty() {
        title.push(Span::raw(" · filter: "));
        title.push(Span::styled(clean(&app.orders.filter), theme.warn()));
    }
    title.push(Span::raw(" "));
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    let wide = area.width >= 110;

    if visible.is_empty() {
        frame.render_widget(block, area);
        let text = if let Some(d) = super::denied(app, &Fetch::Orders) {
            d
        } else if let Some(e) = app.errors.get(&Fetch::Orders) {
            format!("cannot load orders: {e}")
        } else if app.orders.rows.is_empty() && app.loading(&Fetch::Orders) {
            "loading orders…".into()
        } else if app.orders.rows.is_empty() {
            "no orders yet · n places one".into()
        } else {
            "no order matches the filter · Esc clears it".into()
        };
        super::notice(frame, inner, &text, theme.dim());
        return;
    }

    let mut header = vec!["ID"];
    let mut widths = vec![Constraint::Length(8)];
    if wide {
        header.push("TIME");
        widths.push(Constraint::Length(8));
    }
    header.extend(["USER", "SYMBOL", "SIDE", "PRICE", "QTY", "FILLED"]);
    // Symbols and user names longer than their columns get what the row has to spare
    // (STATUS keeps its 11): cut to `VERYLONGS…`, they left blank columns at the right.
    let (mut user_w, mut symbol_w) = (if wide { 12 } else { 9 }, 10);
    let fixed = 8 + if wide { 8 + 10 + 3 } else { 0 } + 4 + 10 + 8 + 8 + 11;
    let columns = if wide { 11 } else { 8 };
    let mut spare = usize::from(inner.width).saturating_sub(2 + fixed + user_w + symbol_w + columns - 1);
    for (w, need) in [
        (&mut symbol_w, fit(visible.iter().map(|o| o.symbol.as_str()), 0, 22)),
        (&mut user_w, fit(visible.iter().map(|o| app.username(&o.user_id)), 0, 24)),
    ] {
        let more = need.saturating_sub(*w).min(spare);
        *w += more;
        spare -= more;
    }
    widths.extend([
        Constraint::Length(user_w as u16),
        Constraint::Length(symbol_w as u16),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
    ]);
    if wide {
        header.extend(["AVG", "TIF"]);
        widths.extend([Constraint::Length(10), Constraint::Length(3)]);
    }
    header.push("STATUS");
    widths.push(Constraint::Min(11));
    // Every cell is cut to its column with a visible `…` (the "▶ " takes two columns).
    let w = column_widths(inner, &widths, 2);

    let (shown, selected) = super::window(visible.len(), app.orders.selected, area);
    let rows = visible[shown].iter().map(|o| {
        let side_style = if o.side == Side::Buy { theme.buy() } else { theme.sell() };
        let status_style = match o.status {
            OrderStatus::Rejected | OrderStatus::Expired => theme.bad(),
            OrderStatus::Filled => theme.ok(),
            OrderStatus::Cancelled => theme.dim(),
            OrderStatus::New | OrderStatus::PartiallyFilled => ratatui::style::Style::new(),
        };
        let decimals = app.symbols.iter().find(|i| i.symbol == o.symbol).map(|i| i.tick.normalize().scale());
        let limit = o.price.map(|p| price(p, decimals)).unwrap_or_else(|| "market".into());
        let plain = ratatui::style::Style::new();
        let mut cells = vec![(short_id(&o.order_id).to_string(), plain)];
        if wide {
            cells.push((clock(&o.created_at).to_string(), plain));
        }
        cells.extend([
            (clean(app.username(&o.user_id)), plain),
            (clean(&o.symbol), plain),
            (o.side.as_str().to_string(), side_style),
            (limit, plain),
            (dec(o.quantity), plain),
            (dec(o.filled_quantity), plain),
        ]);
        if wide {
            cells.push((o.average_price.map(|p| price(p, decimals)).unwrap_or_default(), plain));
            cells.push((o.time_in_force.as_str().to_string(), plain));
        }
        let mut status_text = status(o.status).to_string();
        if wide {
            if let Some(r) = &o.reject_reason {
                status_text = format!("{status_text}: {}", clean(r));
            }
        }
        cells.push((status_text, status_style));
        Row::new(cells.into_iter().zip(&w).map(|((text, style), &width)| Cell::from(cut(&text, width)).style(style)))
    });

    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}
