//! Overview: the ten services with state, uptime and restarts, and the sparklines of
//! orders/s, trades/s, placement p99 and the event rate.
//!
//! A service that restarted says `restarted N×` and one that failed says `FAILED` with
//! its last error, in words first and colour second.
//!
//! A token that may not read `/api/services` (a trader's) sees each service's state from
//! the public `/health`, and the event rate only where the event stream is followed.
//!
//! Where the terminal is too short for every service (under 24 rows), the last row says
//! how many are left out, and how many of those failed or restarted: `… 5 more · 1 FAILED
//! · 1 restarted`.

use super::text::{clean, column_widths, cut, duration, fit, heading, micros, share};
use super::Theme;
use crate::tui::action::Fetch;
use crate::tui::app::App;
use crate::tui::rates::Series;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    // Ten rows, a header and the borders: the services always fit whole.
    let denied = app.unavailable(&Fetch::Services);
    let rows = if denied.is_some() { app.health.as_ref().map_or(0, |h| h.services.len()) } else { app.services.len() };
    let services_h = (rows.max(1) as u16 + 3).min(area.height);
    let [top, bottom] = Layout::vertical([Constraint::Length(services_h), Constraint::Min(0)]).areas(area);
    match denied {
        Some(why) => states(frame, top, app, why, theme),
        None => services(frame, top, app, theme),
    }

    let [upper, lower] = Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(bottom);
    let [a, b] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(upper);
    let [c, d] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(lower);
    let r = &app.rates;
    // The last reading is no rate while the daemon is away: the lines stay, the number goes.
    let away = app.away_for().is_some();
    let per_s = |s: &Series| s.last().filter(|_| !away).map(|v| v.to_string()).unwrap_or_else(|| "–".into());
    sparkline(frame, a, &format!("orders/s {}", per_s(&r.orders_per_s)), &r.orders_per_s, theme);
    sparkline(frame, b, &format!("trades/s {}", per_s(&r.trades_per_s)), &r.trades_per_s, theme);
    let p99 =
        r.place_p99_us.last().filter(|_| !away).map(|v| if v == 0 { "–".to_string() } else { micros(v) }).unwrap_or_else(|| "–".into());
    sparkline(frame, c, &format!("placement p99 {p99}"), &r.place_p99_us, theme);
    if app.polled() {
        let block = Block::bordered().title(super::title(" events/s ", d));
        let inner = block.inner(d);
        frame.render_widget(block, d);
        super::notice(frame, inner, &format!("no event rate for {}", app.who()), theme.dim());
    } else {
        sparkline(frame, d, &format!("events/s {}", per_s(&r.events_per_s)), &r.events_per_s, theme);
    }
}

/// The services' states as the public `/health` gives them, for a token that may not
/// read their details (uptime, restarts, mailboxes, errors); the bottom border says why.
fn states(frame: &mut Frame, area: Rect, app: &App, why: &str, theme: Theme) {
    let services = app.health.as_ref().map(|h| &h.services);
    let running = services.map_or(0, |s| s.values().filter(|v| *v == "running").count());
    let title = match services {
        Some(s) if !s.is_empty() => format!(" Services · {}{running}/{} running ", last_seen(app), s.len()),
        _ => " Services ".into(),
    };
    let note = format!(" uptime, restarts, mailboxes: {} ", clean(why));
    let block = Block::bordered()
        .title(super::title(title, area))
        .title_bottom(Line::styled(cut(&note, area.width.saturating_sub(2) as usize), theme.dim()));
    let Some(services) = services.filter(|s| !s.is_empty()) else {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        super::notice(frame, inner, "loading services…", theme.dim());
        return;
    };
    let widths = [Constraint::Length(9), Constraint::Min(0)];
    let inner = block.inner(area);
    let w = column_widths(inner, &widths, 0);
    let (shown, hidden) = room_for(services.len(), inner);
    let hidden_failed = services.values().skip(shown).filter(|s| *s == "failed").count();
    let rows = services.iter().take(shown).map(|(name, state)| {
        let style = match state.as_str() {
            "running" => theme.ok(),
            "failed" => theme.bad(),
            _ => theme.warn(),
        };
        let shown = if state == "failed" { "FAILED".to_string() } else { clean(state) };
        Row::new(vec![Cell::from(cut(&clean(name), w[0])), Cell::from(cut(&shown, w[1])).style(style)])
    });
    let header = Row::new(["SERVICE", "STATE"].into_iter().zip(&w).map(|(h, &width)| cut(h, width))).style(theme.header());
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
    more(frame, inner, shown, hidden, (hidden_failed, 0), theme);
}

/// How many of `n` rows a bordered table's `inner` area shows under its header, and how
/// many it leaves out: where some are, the last row is theirs ([`more`]).
fn room_for(n: usize, inner: Rect) -> (usize, usize) {
    let room = usize::from(inner.height.saturating_sub(1));
    if n <= room {
        (n, 0)
    } else {
        let shown = room.saturating_sub(1);
        (shown, n - shown)
    }
}

/// The row under the `shown` ones saying that `hidden` services are left out, and how many
/// of them `(failed, restarted)`: the title's counts did not say that rows were missing,
/// and at 40 columns the title itself is cut.
fn more(frame: &mut Frame, inner: Rect, shown: usize, hidden: usize, (failed, restarted): (usize, usize), theme: Theme) {
    if hidden == 0 || inner.height < 2 {
        return;
    }
    let mut spans = vec![Span::styled(format!("… {hidden} more"), theme.dim())];
    for (n, what, style) in [(failed, "FAILED", theme.bad()), (restarted, "restarted", theme.warn())] {
        if n > 0 {
            spans.push(Span::styled(" · ", theme.dim()));
            spans.push(Span::styled(format!("{n} {what}"), style));
        }
    }
    let row = Rect { y: inner.y + 1 + shown as u16, height: 1, ..inner };
    frame.render_widget(Paragraph::new(super::fitted([Line::from(spans)], usize::from(row.width))), row);
}

fn services(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let running = app.services.iter().filter(|s| s.state == "running").count();
    let restarts: u32 = app.services.iter().map(|s| s.restarts).sum();
    let failed = app.services.iter().filter(|s| s.state == "failed").count();
    let mut title = vec![Span::raw(if app.services.is_empty() {
        " Services".to_string()
    } else {
        format!(" Services · {}{running}/{} running", last_seen(app), app.services.len())
    })];
    if failed > 0 {
        title.push(Span::raw(" · "));
        title.push(Span::styled(format!("{failed} FAILED"), theme.bad()));
    }
    if restarts > 0 {
        title.push(Span::raw(" · "));
        title.push(Span::styled(format!("{restarts} restarts"), theme.warn()));
    }
    title.push(Span::raw(" "));
    let block = Block::bordered().title(super::title(Line::from(title), area));
    if app.services.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let why = app.errors.get(&crate::tui::action::Fetch::Services).cloned().unwrap_or_else(|| "loading services…".into());
        super::notice(frame, inner, &why, theme.dim());
        return;
    }
    let cells: Vec<_> = app
        .services
        .iter()
        .map(|s| {
            let (state, note, style) = match s.state.as_str() {
                "failed" => (
                    "FAILED".to_string(),
                    format!("failed after {} restarts: {}", s.restarts, s.last_error.as_deref().unwrap_or("")),
                    theme.bad(),
                ),
                "running" if s.restarts > 0 => {
                    let why = s.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    ("running".into(), format!("restarted {}×{why}", s.restarts), theme.warn())
                }
                "running" => ("running".into(), String::new(), theme.ok()),
                other => (other.to_string(), s.last_error.clone().unwrap_or_default(), theme.warn()),
            };
            let restarts = if s.restarts > 0 { theme.warn() } else { theme.dim() };
            let plain = ratatui::style::Style::new();
            [
                (clean(&s.name), plain),
                (clean(&state), style),
                (duration(app.service_uptime(s)), plain),
                (s.restarts.to_string(), restarts),
                (s.mailbox_depth.to_string(), plain),
                (clean(&note), style),
            ]
        })
        .collect();
    const HEADERS: [(&str, &str); 6] =
        [("SERVICE", "SVC"), ("STATE", "ST"), ("UPTIME", "UP"), ("RESTARTS", "RST"), ("MAILBOX", "MBOX"), ("NOTE", "NOTE")];
    let inner = block.inner(area);
    let widths: Vec<(bool, Constraint)> = if inner.width >= 70 {
        // Room for every column at its usual width (the header's, and a state's).
        [9, 11, 8, 9, 8].into_iter().map(|n| (true, Constraint::Length(n))).chain([(true, Constraint::Min(0))]).collect()
    } else {
        // Narrow: each column as wide as its values (or its short header), the state and
        // the note before the mailboxes; a note gets at least 8.
        let needs: Vec<usize> = (0..6)
            .map(|i| {
                let short = HEADERS[i].1.chars().count();
                if i == 5 {
                    8
                } else {
                    fit(cells.iter().map(|c| c[i].0.as_str()), short, 12)
                }
            })
            .collect();
        let w = share(usize::from(inner.width), &needs, 6, &[0, 1, 3, 2, 5, 4]);
        (0..6).map(|i| (w[i] > 0, if i == 5 { Constraint::Min(0) } else { Constraint::Length(w[i] as u16) })).collect()
    };
    let shown: Vec<usize> = (0..6).filter(|&i| widths[i].0).collect();
    let constraints: Vec<Constraint> = shown.iter().map(|&i| widths[i].1).collect();
    let w = column_widths(inner, &constraints, 0);
    let (shown_rows, hidden) = room_for(cells.len(), inner);
    let left_out = || app.services.iter().skip(shown_rows);
    let hidden_failed = left_out().filter(|s| s.state == "failed").count();
    let hidden_restarted = left_out().filter(|s| s.state != "failed" && s.restarts > 0).count();
    let rows = cells
        .iter()
        .take(shown_rows)
        .map(|c| Row::new(shown.iter().zip(&w).map(|(&i, &width)| Cell::from(cut(&c[i].0, width)).style(c[i].1)).collect::<Vec<_>>()));
    let header = Row::new(shown.iter().zip(&w).map(|(&i, &width)| heading(HEADERS[i].0, HEADERS[i].1, width))).style(theme.header());
    frame.render_widget(Table::new(rows, constraints).header(header).block(block), area);
    more(frame, inner, shown_rows, hidden, (hidden_failed, hidden_restarted), theme);
}

/// While the daemon is away, what the services' title counts is only what was last
/// seen: `daemon away 12s · last seen `, else nothing.
fn last_seen(app: &App) -> String {
    app.away_for().map(|s| format!("daemon away {} · last seen ", duration(s))).unwrap_or_default()
}

fn sparkline(frame: &mut Frame, area: Rect, title: &str, series: &Series, theme: Theme) {
    let block = Block::bordered().title(super::title(format!(" {title} "), area));
    let width = block.inner(area).width as usize;
    let data = series.last_n(width);
    frame.render_widget(Sparkline::default().block(block).data(&data).style(theme.chart()), area);
}
