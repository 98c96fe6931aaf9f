//! Book: the depth ladder of one symbol (asks above, bids below, with cumulative size
//! and the spread between them), its trades tape, and a price chart of 1-minute closes.

use super::text::{clean, clock, column_widths, cut, dec, price};
use super::Theme;
use crate::api::{Candle, Side};
use crate::tui::action::Fetch;
use crate::tui::app::{App, Conn};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};
use ratatui::Frame;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    // Beside the ladder, the tape and the chart need some 40 columns. Narrower, the ladder
    // takes the width, above the tape where there are rows for both, and the chart goes:
    // squeezed into 4 columns beside it, they showed nothing a person could read.
    let (left, tape, chart) = if area.width >= NARROW {
        let ladder_w = if area.width >= 110 { 50 } else { 36 };
        let [left, right] = Layout::horizontal([Constraint::Length(ladder_w), Constraint::Min(0)]).areas(area);
        let [tape, chart] = Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(right);
        (left, tape, chart)
    } else if area.height >= 20 {
        let [left, tape] = Layout::vertical([Constraint::Ratio(3, 5), Constraint::Ratio(2, 5)]).areas(area);
        (left, tape, Rect::default())
    } else {
        (area, Rect::default(), Rect::default())
    };

    let Some(symbol) = app.book.symbol.as_deref() else {
        let block = Block::bordered().title(super::title(" Book ", area));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = if let Some(d) = super::denied(app, &Fetch::Symbols) {
            d
        } else if let Some(e) = app.errors.get(&Fetch::Symbols) {
            format!("cannot list instruments: {e}")
        } else if app.symbols.is_empty() && (app.conn != Conn::Live || app.loading(&Fetch::Symbols)) {
            "loading instruments…".into()
        } else if app.symbols.is_empty() {
            "no instruments yet · add one with `agt symbol add`".into()
        } else {
            "choose a symbol with h/l".into()
        };
        super::notice(frame, inner, &text, theme.dim());
        return;
    };
    let symbol = clean(symbol);
    let Some(m) = app.market() else {
        for (a, t) in [(left, "book"), (tape, "trades"), (chart, "price")].into_iter().filter(|(a, _)| !a.is_empty()) {
            let block = Block::bordered().title(super::title(format!(" {symbol} {t} "), a));
            let inner = block.inner(a);
            frame.render_widget(block, a);
            let key = Fetch::Market(symbol.clone());
            let text = match (super::denied(app, &key), app.errors.get(&key)) {
                (Some(d), _) => d,
                (None, Some(e)) => format!("cannot load {symbol}: {e}"),
                (None, None) => format!("loading {symbol}…"),
            };
            super::notice(frame, inner, &text, theme.dim());
        }
        return;
    };
    let decimals = app.symbols.iter().find(|i| i.symbol == symbol).map(|i| i.tick.normalize().scale());
    ladder(frame, left, &symbol, &m.book.bids, &m.book.asks, decimals, theme);
    if !tape.is_empty() {
        trades(frame, tape, &symbol, m, decimals, theme);
    }
    if !chart.is_empty() {
        price_chart(frame, chart, &symbol, &m.candles, decimals, theme);
    }
}

/// The narrowest Book that has the ladder (36) beside the tape and the chart (40).
const NARROW: u16 = 76;

fn ladder(
    frame: &mut Frame,
    area: Rect,
    symbol: &str,
    bids: &[(Decimal, Decimal)],
    asks: &[(Decimal, Decimal)],
    decimals: Option<u32>,
    theme: Theme,
) {
    let spread = match (bids.first(), asks.first()) {
        (Some(b), Some(a)) => format!("spread {}", price(a.0 - b.0, decimals)),
        _ => "no spread".into(),
    };
    let block = Block::bordered().title(super::titled(
        [
            Line::from(vec![Span::raw(format!(" {symbol} · ")), Span::styled(spread.clone(), theme.header()), Span::raw(" · ◀ h l ▶ ")]),
            Line::from(vec![Span::raw(format!(" {symbol} · ")), Span::styled(spread.clone(), theme.header()), Span::raw(" ")]),
        ],
        area,
    ));
    let inner = block.inner(area);
    // Header and spread line take two rows; the rest is shared by asks and bids.
    let half = (inner.height.saturating_sub(2) / 2) as usize;
    let cumulative = |levels: &[(Decimal, Decimal)]| -> Vec<(Decimal, Decimal, Decimal)> {
        let mut total = Decimal::ZERO;
        levels
            .iter()
            .take(half)
            .map(|&(p, q)| {
                total += q;
                (p, q, total)
            })
            .collect()
    };
    let asks = cumulative(asks);
    let bids = cumulative(bids);
    // Numbers right-aligned in three equal columns, so digits line up across levels; where
    // they would be narrower than 8, the cumulative size goes and price and size share the room.
    let cum = inner.width >= 6 + 3 * 8;
    let w = (inner.width.saturating_sub(if cum { 6 } else { 5 }) / if cum { 3 } else { 2 }) as usize;
    let level = |word: &'static str, (p, q, c): (Decimal, Decimal, Decimal), style| {
        let mut spans = vec![
            // Cut with a `…`: the paragraph would cut a long number at the edge unmarked.
            Span::styled(format!("{word:<3} {:>w$}", cut(&price(p, decimals), w)), style),
            Span::raw(format!(" {:>w$}", cut(&dec(q), w))),
        ];
        if cum {
            spans.push(Span::raw(format!(" {:>w$}", cut(&dec(c), w))));
        }
        Line::from(spans)
    };
    let header = if cum {
        format!("{:<3} {:>w$} {:>w$} {:>w$}", "", "PRICE", "SIZE", "CUM")
    } else {
        format!("{:<3} {:>w$} {:>w$}", "", "PRICE", "SIZE")
    };
    let mut lines = vec![Line::styled(header, theme.header())];
    // Asks from the furthest down to the best, so the best ask sits just above the spread.
    for _ in asks.len()..half {
        lines.push(Line::raw(""));
    }
    for l in asks.iter().rev() {
        lines.push(level("ask", *l, theme.sell()));
    }
    let mid = if asks.is_empty() && bids.is_empty() { "── empty book ──".to_string() } else { format!("── {spread} ──") };
    lines.push(Line::styled(mid, theme.dim()).centered());
    for l in &bids {
        lines.push(level("bid", *l, theme.buy()));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn trades(frame: &mut Frame, area: Rect, symbol: &str, m: &crate::tui::action::MarketData, decimals: Option<u32>, theme: Theme) {
    let last = m.trades.first().map(|t| format!(" · last {}", price(t.price, decimals))).unwrap_or_default();
    let block = Block::bordered().title(super::titled([format!(" {symbol} trades{last} "), format!(" {symbol} trades ")], area));
    if m.trades.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        super::notice(frame, inner, "no trades yet", theme.dim());
        return;
    }
    let widths = [Constraint::Length(8), Constraint::Length(4), Constraint::Min(8), Constraint::Min(6)];
    let w = column_widths(block.inner(area), &widths, 0);
    let rows = m.trades.iter().map(|t| {
        let style = if t.taker_side == Side::Buy { theme.buy() } else { theme.sell() };
        Row::new(vec![
            Cell::from(clock(&t.timestamp).to_string()),
            Cell::from(t.taker_side.as_str()).style(style),
            Cell::from(cut(&price(t.price, decimals), w[2])).style(style),
            Cell::from(cut(&dec(t.quantity), w[3])),
        ])
    });
    let header = Row::new(["TIME", "SIDE", "PRICE", "QTY"]).style(theme.header());
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn price_chart(frame: &mut Frame, area: Rect, symbol: &str, candles: &[Candle], decimals: Option<u32>, theme: Theme) {
    let block = Block::bordered().title(super::title(format!(" {symbol} 1m closes "), area));
    // Plotting is the one place a price becomes a float: it only picks a screen row.
    let points: Vec<(f64, f64)> = candles.iter().enumerate().filter_map(|(i, c)| Some((i as f64, c.close.to_f64()?))).collect();
    if points.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        super::notice(frame, inner, "no candles yet", theme.dim());
        return;
    }
    let low = candles.iter().map(|c| c.low).min().unwrap_or_default();
    let high = candles.iter().map(|c| c.high).max().unwrap_or_default();
    let (lo, hi) = (low.to_f64().unwrap_or(0.0), high.to_f64().unwrap_or(0.0));
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.001).max(1e-9);
    let hhmm = |c: Option<&Candle>| c.map(|c| clock(&c.open_time).chars().take(5).collect::<String>()).unwrap_or_default();
    let (first, last) = (hhmm(candles.first()), hhmm(candles.last()));
    let dataset = Dataset::default().data(&points).graph_type(GraphType::Line).marker(Marker::Braille).style(theme.chart());
    let chart = Chart::new(vec![dataset])
        .block(block)
        .x_axis(Axis::default().bounds([0.0, (points.len().max(2) - 1) as f64]).labels([first, last]).style(theme.dim()))
        .y_axis(Axis::default().bounds([lo - pad, hi + pad]).labels([price(low, decimals), price(high, decimals)]).style(theme.dim()));
    frame.render_widget(chart, area);
}
