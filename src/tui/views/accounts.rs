//! Accounts: users on the left (a trader's own alone); the selected user's balances
//! (total, held by open orders, available) and positions on the right.

use super::text::{clean, column_widths, cut, dec, fit, heading};
use super::Theme;
use crate::tui::action::{short_id, Fetch};
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    // Below 80 columns the users list gives up room to the amounts (a third of the width,
    // a name of a few letters beside its status): at 60 it kept 26 and the balances lost
    // their totals.
    let users_w = match area.width {
        110.. => 36,
        80.. => 26,
        w => (w / 3).max(18),
    };
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
        // The total first: what the user owns; the held part is total less available.
        let (cols, widths) = narrow(block.inner(balances_area), &cells, &fill, &HEADERS, &[0, 1, 3, 2]);
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

/// A row of an account table: the cells of the columns `cols` shows, each fitted to its
/// width, with column `styled.0` in `styled.1` (held amounts, a position's side).
fn shown_row<const N: usize>(cells: &[String; N], cols: &[usize], widths: &[usize], styled: (usize, Style)) -> Row<'static> {
    let cell = |(&i, &width): (&usize, &usize)| {
        // Column 0 is the name, cut with a mark; an amount is whole or `…` alone.
        let text = match i {
            0 => cut(&cells[i], width),
            _ if cells[i].chars().count() <= width => cells[i].clone(),
            _ => "…".to_string(),
        };
        let cell = Cell::from(text);
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
/// usual `fill` layout, or, where its even shares would cut a long amount, each column
/// its need and the rest spread. Narrower, the name (column `rank[0]`, cut with `…` down
/// to its short header's width to leave the first amount room) and then the amounts in
/// `rank` order, each whole or left out: an amount is never shown cut, as a cut one reads
/// as another amount (`123456789016.0` for `123456789016.04595678`), and at 60 columns the
/// totals were. Where not even the first amount fits whole beside the name, it takes the
/// rest of the row, and a value too long for it shows `…` alone ([`shown_row`]).
fn narrow<const N: usize>(
    inner: Rect,
    cells: &[[String; N]],
    fill: &[Constraint; N],
    headers: &[(&str, &str); N],
    rank: &[usize],
) -> (Vec<usize>, Vec<Constraint>) {
    let needs: Vec<usize> = (0..N).map(|i| fit(cells.iter().map(|c| c[i].as_str()), headers[i].1.chars().count(), 24)).collect();
    let room = usize::from(inner.width);
    let whole = needs.iter().sum::<usize>() + N - 1;
    if whole <= room {
        if column_widths(inner, fill, 0).iter().zip(&needs).all(|(w, need)| w >= need) {
            return ((0..N).collect(), fill.to_vec());
        }
        let spare = room - whole;
        let widths = (0..N).map(|i| Constraint::Length((needs[i] + spare / N + usize::from(i < spare % N)) as u16)).collect();
        return ((0..N).collect(), widths);
    }
    let mut w = vec![0; N];
    let (name, amounts) = rank.split_first().expect("a name column");
    let least_name = headers[*name].1.chars().count().min(needs[*name]);
    let first_amount = amounts.first().map_or(0, |&i| needs[i] + 1);
    w[*name] = needs[*name].min(room.saturating_sub(first_amount)).max(least_name).min(room);
    let mut used = w[*name];
    for &i in amounts {
        if used + 1 + needs[i] <= room {
            w[i] = needs[i];
            used += 1 + needs[i];
        }
    }
    if let Some(&first) = amounts.first().filter(|_| amounts.iter().all(|&i| w[i] == 0)) {
        w[first] = room.saturating_sub(used + 1);
    }
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
    let (shown, selected) = super::list_window(app, app.users.len(), app.accounts.selected, area);
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
