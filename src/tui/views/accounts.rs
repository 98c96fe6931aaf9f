//! Accounts: users on the left (a trader's own alone); the selected user's balances
//! (total, held by open orders, available) and positions on the right.

use super::text::{clean, column_widths, cut, dec, fit, heading, share};
use super::Theme;
use crate::tui::action::{short_id, Fetch};
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let users_w = if area.width >= 110 { 36 } else { 26 };
    let [left, right] = Layout::horizontal([Constraint::Length(users_w), Constraint::Min(0)]).areas(area);
    users(frame, left, app, theme);

    let Some(user) = app.selected_user() else {
        let block = Block::bordered().title(super::title(" Account ", right));
        let inner = block.inner(right);
        frame.render_widget(block, right);
        super::notice(frame, inner, "no user selected", theme.dim());
        return;
    };
    let [balances_area, positions_area] = Layout::vertical([Constraint::Ratio(3, 5), Constraint::Ratio(2, 5)]).areas(right);
    // A long name is cut, marked, to leave its status and id in the title.
    let rest = format!(" · {} · {} ", user.status, short_id(&user.user_id));
    let room = usize::from(right.width).saturating_sub(4 + rest.chars().count()).max(8);
    let title = format!(" {}{rest}", cut(&clean(&user.username), room));
    let Some(account) = app.account() else {
        let block = Block::bordered().title(super::title(title.clone(), right));
        let inner = block.inner(balances_area);
        frame.render_widget(block, balances_area);
        let key = Fetch::Account(user.user_id.clone());
        let text = match (super::denied(app, &key), app.errors.get(&key)) {
            (Some(d), _) => d,
            (None, Some(e)) => format!("cannot load the account: {e}"),
            (None, None) => "loading account…".into(),
        };
        super::notice(frame, inner, &text, theme.dim());
        frame.render_widget(Block::bordered().title(super::title(" Positions ", positions_area)), positions_area);
        return;
    };

    let block = Block::bordered().title(super::title(title, right));
    if account.balances.is_empty() {
        let inner = block.inner(balances_area);
        frame.render_widget(block, balances_area);
        let text = if app.may_transfer() { "no funds yet · d deposits" } else { "no funds yet" };
        super::notice(frame, inner, text, theme.dim());
    } else {
        let cells: Vec<[String; 4]> =
            account.balances.iter().map(|b| [clean(&b.asset), dec(b.total), dec(b.held), dec(b.available)]).collect();
        let held = |i: usize| if account.balances[i].held.is_zero() { theme.dim() } else { theme.warn() };
        // The asset column as wide as its longest name (a base asset may have 20
        // letters), the amounts sharing the rest.
        let asset_w = fit(cells.iter().map(|c| c[0].as_str()), 8, 20) as u16;
        let fill = [Constraint::Length(asset_w), Constraint::Fill(1), Constraint::Fill(1), Constraint::Fill(1)];
        const HEADERS: [(&str, &str); 4] = [("ASSET", "ASSET"), ("TOTAL", "TOTAL"), ("HELD", "HELD"), ("AVAILABLE", "AVAIL")];
        let (cols, widths) = narrow(block.inner(balances_area), &cells, &fill, &HEADERS, &[0, 3, 1, 2]);
        let w = column_widths(block.inner(balances_area), &widths, 0);
        let rows = cells.iter().enumerate().map(|(r, c)| shown_row(c, &cols, &w, (2, held(r))));
        let header = Row::new(cols.iter().zip(&w).map(|(&i, &width)| heading(HEADERS[i].0, HEADERS[i].1, width))).style(theme.header());
        frame.render_widget(Table::new(rows, widths).header(header).block(block), balances_area);
    }

    let block = Block::bordered().title(super::title(" Positions ", positions_area));
    if account.positions.is_empty() {
        let inner = block.inner(positions_area);
        frame.render_widget(block, positions_area);
        super::notice(frame, inner, "no positions", theme.dim());
    } else {
        let cells: Vec<[String; 3]> = account.positions.iter().map(|p| [clean(&p.symbol), dec(p.quantity), dec(p.average_price)]).collect();
        let symbol_w = fit(cells.iter().map(|c| c[0].as_str()), 10, 24) as u16;
        let fill = [Constraint::Length(symbol_w), Constraint::Fill(1), Constraint::Fill(1)];
        const HEADERS: [(&str, &str); 3] = [("SYMBOL", "SYM"), ("QUANTITY", "QTY"), ("AVG PRICE", "AVG")];
        let (cols, widths) = narrow(block.inner(positions_area), &cells, &fill, &HEADERS, &[0, 1, 2]);
        let w = column_widths(block.inner(positions_area), &widths, 0);
        let rows = account.positions.iter().zip(&cells).map(|(p, c)| {
            let style = if p.quantity.is_sign_negative() { theme.sell() } else { theme.buy() };
            shown_row(c, &cols, &w, (1, style))
        });
        let header = Row::new(cols.iter().zip(&w).map(|(&i, &width)| heading(HEADERS[i].0, HEADERS[i].1, width))).style(theme.header());
        frame.render_widget(Table::new(rows, widths).header(header).block(block), positions_area);
    }
}

/// A row of an account table: the cells of the columns `cols` shows, each cut to its
/// width, with column `styled.0` in `styled.1` (held amounts, a position's side).
fn shown_row<const N: usize>(cells: &[String; N], cols: &[usize], widths: &[usize], styled: (usize, Style)) -> Row<'static> {
    let cell = |(&i, &width): (&usize, &usize)| {
        let cell = Cell::from(cut(&cells[i], width));
        if i == styled.0 {
            cell.style(styled.1)
        } else {
            cell
        }
    };
    Row::new(cols.iter().zip(widths).map(cell).collect::<Vec<_>>())
}

/// The columns of an account table that an `inner` this wide shows, and their widths.
/// Where every column fits whole (each as wide as its values, or its short header), the
/// usual `fill` layout; narrower, the columns in `rank` order as [`share`] gives them
/// room: four columns in the 12 a 40-column terminal leaves headed `H` and showed
/// a digit of each amount (an amount cut short reads as another amount).
fn narrow<const N: usize>(
    inner: Rect,
    cells: &[[String; N]],
    fill: &[Constraint; N],
    headers: &[(&str, &str); N],
    rank: &[usize],
) -> (Vec<usize>, Vec<Constraint>) {
    let needs: Vec<usize> = (0..N).map(|i| fit(cells.iter().map(|c| c[i].as_str()), headers[i].1.chars().count(), 24)).collect();
    let room = usize::from(inner.width);
    if needs.iter().sum::<usize>() + N - 1 <= room {
        return ((0..N).collect(), fill.to_vec());
    }
    let w = share(room, &needs, 6, rank);
    let cols: Vec<usize> = (0..N).filter(|&i| w[i] > 0).collect();
    let widths = cols.iter().map(|&i| Constraint::Length(w[i] as u16)).collect();
    (cols, widths)
}

fn users(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let block =
        Block::bordered().title(super::titled([format!(" Users · {} ", app.users.len()), format!(" Users {} ", app.users.len())], area));
    if app.users.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = match (super::denied(app, &Fetch::Users), app.errors.get(&Fetch::Users)) {
            (Some(d), _) => d,
            (None, Some(e)) => format!("cannot list users: {e}"),
            (None, None) => "no users yet".into(),
        };
        super::notice(frame, inner, &text, theme.dim());
        return;
    }
    let widths = [Constraint::Min(0), Constraint::Length(8)];
    // A status longer than its column (`suspended`) ends in `…` like a long name.
    let w = column_widths(block.inner(area), &widths, 2);
    let (shown, selected) = super::window(app.users.len(), app.accounts.selected, area);
    let rows = app.users[shown].iter().map(|u| {
        let status = Cell::from(cut(&clean(&u.status), w[1])).style(if u.status == "active" { theme.dim() } else { theme.warn() });
        Row::new(vec![Cell::from(cut(&clean(&u.username), w[0])), status])
    });
    let table = Table::new(rows, widths)
        .header(Row::new(["USER", "STATUS"]).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    frame.render_stateful_widget(table, area, &mut TableState::default().with_selected(Some(selected)));
}
