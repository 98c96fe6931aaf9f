//! Orders: the newest orders of every user (a trader's own only), live, with the
//! selected one ready for `c` (cancel) and `a` (amend). Wider terminals get more columns.

use super::text::{clean, clock, column_widths, cut, dec, fit, price, status};
use super::Theme;
use crate::api::{Order, OrderStatus, Side};
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
    let block = Block::bordered().title(super::title(Line::from(title), area));
    let inner = block.inner(area);

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

    let plain = ratatui::style::Style::new();
    let decimals = |o: &Order| app.symbols.iter().find(|i| i.symbol == o.symbol).map(|i| i.tick.normalize().scale());
    let limit = |o: &Order| o.price.map(|p| price(p, decimals(o))).unwrap_or_else(|| "market".into());
    let columns = layout(app, &visible, inner.width, &limit);
    let widths: Vec<Constraint> = columns.iter().map(|c| c.1).collect();
    // Every cell is cut to its column with a visible `…` (the "▶ " takes two columns).
    let w = column_widths(inner, &widths, 2);

    let (shown, selected) = super::list_window(app, visible.len(), app.orders.selected, area);
    let rows = visible[shown].iter().map(|o| {
        let side_style = if o.side == Side::Buy { theme.buy() } else { theme.sell() };
        let status_style = match o.status {
            OrderStatus::Rejected | OrderStatus::Expired => theme.bad(),
            OrderStatus::Filled => theme.ok(),
            OrderStatus::Cancelled => theme.dim(),
            OrderStatus::New | OrderStatus::PartiallyFilled => plain,
        };
        let cells = columns.iter().map(|(col, _)| match col {
            Col::Id => (short_id(&o.order_id).to_string(), plain),
            Col::Time => (clock(&o.created_at).to_string(), plain),
            Col::User => (clean(app.username(&o.user_id)), plain),
            Col::Symbol => (clean(&o.symbol), plain),
            Col::Side => (o.side.as_str().to_string(), side_style),
            Col::Price => (limit(o), plain),
            Col::Qty => (dec(o.quantity), plain),
            Col::Filled => (dec(o.filled_quantity), plain),
            Col::FilledOfQty => (filled_of(o), plain),
            Col::Avg => (o.average_price.map(|p| price(p, decimals(o))).unwrap_or_default(), plain),
            Col::Tif => (o.time_in_force.as_str().to_string(), plain),
            Col::Status => (status(o.status).to_string(), status_style),
            Col::StatusWhy => match &o.reject_reason {
                Some(r) => (format!("{}: {}", status(o.status), clean(r)), status_style),
                None => (status(o.status).to_string(), status_style),
            },
        });
        Row::new(cells.zip(&w).map(|((text, style), &width)| Cell::from(cut(&text, width)).style(style)))
    });
    // A column narrower than its name is headed by a short form: cut by the table, SYMBOL read as SYMB.
    let header = columns.iter().zip(&w).map(|((c, _), &width)| if c.header().len() <= width { c.header() } else { c.short_header() });
    let header = Row::new(header).style(theme.header());

    let table = Table::new(rows, widths).header(header).block(block).row_highlight_style(theme.selected()).highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// A column of the Orders table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Id,
    Time,
    User,
    Symbol,
    Side,
    Price,
    Qty,
    Filled,
    /// `filled/quantity` in one column, where there is no room for two.
    FilledOfQty,
    Avg,
    Tif,
    Status,
    /// The status with a rejected order's reason.
    StatusWhy,
}

impl Col {
    fn short_header(self) -> &'static str {
        match self {
            Col::Symbol => "SYM",
            Col::Filled | Col::FilledOfQty => "FILL",
            Col::Status | Col::StatusWhy => "ST",
            other => other.header(),
        }
    }

    fn header(self) -> &'static str {
        match self {
            Col::Id => "ID",
            Col::Time => "TIME",
            Col::User => "USER",
            Col::Symbol => "SYMBOL",
            Col::Side => "SIDE",
            Col::Price => "PRICE",
            Col::Qty => "QTY",
            Col::Filled | Col::FilledOfQty => "FILLED",
            Col::Avg => "AVG",
            Col::Tif => "TIF",
            Col::Status | Col::StatusWhy => "STATUS",
        }
    }
}

/// `2/5`: filled of quantity.
fn filled_of(o: &Order) -> String {
    format!("{}/{}", dec(o.filled_quantity), dec(o.quantity))
}

/// The columns an `inner` (within the borders) this wide shows, and their widths. From 110
/// columns, everything; where the usual eight fit, those; narrower, the few a person tells
/// an order by (symbol, side, price, filled of quantity, status), then the user and the
/// id as room allows. All eight squeezed into 40 columns cut every value to a few letters.
fn layout(app: &App, visible: &[&Order], inner: u16, limit: &dyn Fn(&Order) -> String) -> Vec<(Col, Constraint)> {
    let room = usize::from(inner).saturating_sub(2); // the "▶ "
    let symbol_need = fit(visible.iter().map(|o| o.symbol.as_str()), 0, 22);
    let user_need = fit(visible.iter().map(|o| app.username(&o.user_id)), 0, 24);
    let len = |w: usize| Constraint::Length(w as u16);
    let wide = inner >= 108;
    // Symbols and user names longer than their columns get what the row has to spare
    // (STATUS keeps its 11): cut to `VERYLONGS…`, they left blank columns at the right.
    let (mut user_w, mut symbol_w) = (if wide { 12 } else { 9 }, 10);
    let fixed = 8 + if wide { 8 + 10 + 3 } else { 0 } + 4 + 10 + 8 + 8 + 11;
    let count = if wide { 11 } else { 8 };
    let usual = fixed + user_w + symbol_w + count - 1;
    if room >= usual {
        let mut spare = room - usual;
        for (w, need) in [(&mut symbol_w, symbol_need), (&mut user_w, user_need)] {
            let more = need.saturating_sub(*w).min(spare);
            *w += more;
            spare -= more;
        }
        let mut cols = vec![(Col::Id, len(8))];
        if wide {
            cols.push((Col::Time, len(8)));
        }
        cols.extend([
            (Col::User, len(user_w)),
            (Col::Symbol, len(symbol_w)),
            (Col::Side, len(4)),
            (Col::Price, len(10)),
            (Col::Qty, len(8)),
            (Col::Filled, len(8)),
        ]);
        if wide {
            cols.extend([(Col::Avg, len(10)), (Col::Tif, len(3)), (Col::StatusWhy, Constraint::Min(11))]);
        } else {
            cols.push((Col::Status, Constraint::Min(11)));
        }
        return cols;
    }
    let price_w = fit(visible.iter().map(|o| limit(o)).collect::<Vec<_>>().iter().map(String::as_str), 5, 14);
    let filled_w = fit(visible.iter().map(|o| filled_of(o)).collect::<Vec<_>>().iter().map(String::as_str), 6, 17);
    let status_w = fit(visible.iter().map(|o| status(o.status)), 6, 11);
    let mut spare = room.saturating_sub(4 + price_w + filled_w + status_w + 4);
    let symbol_w = symbol_need.max(6).min(spare.saturating_sub(1)).max(4);
    spare = spare.saturating_sub(symbol_w + 1);
    let mut cols = Vec::new();
    let user_w = user_need.clamp(4, 12);
    if spare > user_w {
        spare -= user_w + 1;
        cols.push((Col::User, len(user_w)));
    }
    if spare > 8 {
        cols.insert(0, (Col::Id, len(8)));
    }
    cols.extend([
        (Col::Symbol, len(symbol_w)),
        (Col::Side, len(4)),
        (Col::Price, len(price_w)),
        (Col::FilledOfQty, len(filled_w)),
        (Col::Status, Constraint::Min(status_w as u16)),
    ]);
    cols
}
