//! Accounts: users on the left (a trader's own alone); the selected user's balances
//! (total, held by open orders, available) and positions on the right.

use super::text::{clean, column_widths, cut, dec, fit};
use super::Theme;
use crate::tui::action::{short_id, Fetch};
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
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
        // The asset column as wide as its longest name (a base asset may have 20
        // letters), the amounts sharing the rest.
        let asset_w = fit(account.balances.iter().map(|b| b.asset.as_str()), 8, 20) as u16;
        let widths = [Constraint::Length(asset_w), Constraint::Fill(1), Constraint::Fill(1), Constraint::Fill(1)];
        let w = column_widths(block.inner(balances_area), &widths, 0);
        let rows = account.balances.iter().map(|b| {
            let held = Cell::from(cut(&dec(b.held), w[2])).style(if b.held.is_zero() { theme.dim() } else { theme.warn() });
            Row::new(vec![
                Cell::from(cut(&clean(&b.asset), w[0])),
                Cell::from(cut(&dec(b.total), w[1])),
                held,
                Cell::from(cut(&dec(b.available), w[3])),
            ])
        });
        let header = Row::new(["ASSET", "TOTAL", "HELD", "AVAILABLE"]).style(theme.header());
        frame.render_widget(Table::new(rows, widths).header(header).block(block), balances_area);
    }

    let block = Block::bordered().title(super::title(" Positions ", positions_area));
    if account.positions.is_empty() {
        let inner = block.inner(positions_area);
        frame.render_widget(block, positions_area);
        super::notice(frame, inner, "no positions", theme.dim());
    } else {
        let symbol_w = fit(account.positions.iter().map(|p| p.symbol.as_str()), 10, 24) as u16;
        let widths = [Constraint::Length(symbol_w), Constraint::Fill(1), Constraint::Fill(1)];
        let w = column_widths(block.inner(positions_area), &widths, 0);
        let rows = account.positions.iter().map(|p| {
            let style = if p.quantity.is_sign_negative() { theme.sell() } else { theme.buy() };
            Row::new(vec![
                Cell::from(cut(&clean(&p.symbol), w[0])),
                Cell::from(cut(&dec(p.quantity), w[1])).style(style),
                Cell::from(cut(&dec(p.average_price), w[2])),
            ])
        });
        let header = Row::new(["SYMBOL", "QUANTITY", "AVG PRICE"]).style(theme.header());
        frame.render_widget(Table::new(rows, widths).header(header).block(block), positions_area);
    }
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
    let name_w = area.width.saturating_sub(2 + 2 + 9) as usize;
    let (shown, selected) = super::window(app.users.len(), app.accounts.selected, area);
    let rows = app.users[shown].iter().map(|u| {
        let status = Cell::from(u.status.clone()).style(if u.status == "active" { theme.dim() } else { theme.warn() });
        Row::new(vec![Cell::from(cut(&clean(&u.username), name_w)), status])
    });
    let widths = [Constraint::Min(0), Constraint::Length(8)];
    let table = Table::new(rows, widths)
        .header(Row::new(["USER", "STATUS"]).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    frame.render_stateful_widget(table, area, &mut TableState::default().with_selected(Some(selected)));
}
