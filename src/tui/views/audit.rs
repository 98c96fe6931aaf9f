//! Audit: whether the hash chain verifies, and the newest records, newest first; or,
//! for a token that may not read the log (a trader's), why not.

use super::text::{clean, clock, column_widths, cut, fit, share, wrap};
use super::Theme;
use crate::tui::action::Fetch;
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    if let Some(why) = app.unavailable(&Fetch::Audit) {
        let what = format!("The audit log is not available to {}.", app.who());
        let instead = "An admin or viewer token reads it (agt audit tail, agt audit verify).";
        super::unavailable(frame, area, "Audit", &what, why, instead, theme);
        return;
    }
    // The verdict as (what leads it, in its colour; the rest), fitted below.
    let (lead, style, rest) = match (&app.audit.verify, app.errors.get(&Fetch::AuditVerify)) {
        (_, Some(e)) => (format!("cannot verify: {e}"), theme.bad(), String::new()),
        (None, None) => ("verifying the chain…".to_string(), theme.dim(), String::new()),
        (Some(v), None) if v.ok => ("chain OK".to_string(), theme.ok(), format!(": {} records, every hash matches", v.records)),
        // Every record hashes well, but an anchor file cannot be read: the chain's end is
        // unchecked; the CLI's `audit verify` says what to do.
        (Some(v), None) if v.first_bad.is_none() && v.anchor_unreadable.is_some() => {
            let a = v.anchor_unreadable.as_ref().expect("matched");
            let rest =
                format!(": {} records hash well, but the anchor {} {}; `agt audit verify` says what to do", v.records, a.file, a.error);
            ("chain end UNCHECKED".to_string(), theme.bad(), rest)
        }
        (Some(v), None) => {
            let first_bad = v.first_bad.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            let anchor = match &v.unmet_anchor {
                Some(a) => match a.chain_end {
                    Some(end) => format!("; records {}..{} missing (anchored in {})", end + 1, a.seq, a.file),
                    None => format!("; record {} is not the one anchored in {}", a.seq, a.file),
                },
                None => String::new(),
            };
            let anchor = match &v.anchor_unreadable {
                Some(a) => format!("{anchor}; the anchor {} {}", a.file, a.error),
                None => anchor,
            };
            ("chain BROKEN".to_string(), theme.bad(), format!(": {} records; the first bad one is seq {first_bad}{anchor}", v.records))
        }
    };
    // A verdict that is not OK (what its anchor says is missing, what to do) runs past 80
    // columns: it gets a second row, where an ok one keeps a single row. What still does
    // not fit ends in … (`text::wrap`), rather than cut where the border is.
    let two = app.audit.verify.as_ref().is_some_and(|v| !v.ok);
    let rows = if two { 4 } else { 3 };
    let [head, body] = Layout::vertical([Constraint::Length(rows), Constraint::Min(0)]).areas(area);
    let fitted = wrap(&format!("{lead}{rest}"), head.width.saturating_sub(2) as usize, (rows - 2) as usize);
    let lines: Vec<Line> = fitted
        .into_iter()
        .enumerate()
        .map(|(i, row)| match row.strip_prefix(lead.as_str()) {
            Some(after) if i == 0 && !rest.is_empty() => Line::from(vec![Span::styled(lead.clone(), style), Span::raw(after.to_string())]),
            _ if rest.is_empty() => Line::from(Span::styled(row, style)),
            _ => Line::from(row),
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(super::titled([" Verify · v runs it again ", " Verify · v again ", " Verify "], head))),
        head,
    );

    let records = &app.audit.records;
    let block = Block::bordered().title(super::title(format!(" Audit · newest {} ", records.len()), body));
    if records.is_empty() {
        let inner = block.inner(body);
        frame.render_widget(block, body);
        let text = match app.errors.get(&Fetch::Audit) {
            Some(e) => format!("cannot load the audit log: {e}"),
            None if app.loading(&Fetch::Audit) => "loading…".into(),
            None => "no records".into(),
        };
        super::notice(frame, inner, &text, theme.dim());
        return;
    }
    let wide = area.width >= 110;
    let inner = block.inner(body);
    let cells = |r: &crate::api::AuditRecord| {
        let detail = match &r.detail {
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        };
        [
            r.seq.to_string(),
            clock(&r.timestamp).to_string(),
            clean(&r.actor),
            clean(&r.action),
            r.hash.get(..10).unwrap_or(&r.hash).to_string(),
            clean(&detail),
        ]
    };
    // SEQ, TIME, ACTOR, ACTION, HASH, DETAIL. Wide: every column. Narrower: the action
    // first, then the actor, the sequence number, the time and the detail (at least 10),
    // each as wide as its values (see `share`); what does not fit is cut with `…` or left
    // out, whole in the record's detail (Enter). Squeezed together at 40 columns they read `event:or`, `ORDER_CR`.
    let needs: [usize; 6] = if wide {
        [8, 8, 14, 24, 10, 0]
    } else {
        let all: Vec<[String; 6]> = records.iter().map(cells).collect();
        let need = |i: usize, min: usize, max: usize| fit(all.iter().map(|c| c[i].as_str()), min, max);
        [need(0, 3, 8), 8, need(2, 5, 14), need(3, 6, 24), 0, 10]
    };
    let needs = if wide { needs.to_vec() } else { share(usize::from(inner.width.saturating_sub(2)), &needs, 6, &[3, 2, 0, 1, 5]) };
    // The HASH column is only in the wide layout: `share` never ranks it, so it gets 0.
    let cols: Vec<usize> = (0..6).filter(|&i| wide || needs[i] > 0).collect();
    let widths: Vec<Constraint> =
        cols.iter().map(|&i| if i == 5 { Constraint::Min(0) } else { Constraint::Length(needs[i] as u16) }).collect();
    let w = column_widths(inner, &widths, 2);
    let (shown, selected) = super::list_window(app, records.len(), app.audit.selected, body);
    let rows = records.iter().rev().skip(shown.start).take(shown.len()).map(|r| {
        let c = cells(r);
        Row::new(
            cols.iter()
                .zip(&w)
                .map(|(&i, &width)| {
                    let cell = Cell::from(cut(&c[i], width));
                    if i >= 4 {
                        cell.style(theme.dim())
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>(),
        )
    });
    const HEADERS: [&str; 6] = ["SEQ", "TIME", "ACTOR", "ACTION", "HASH", "DETAIL"];
    let header = cols.iter().zip(&w).map(|(&i, &width)| cut(HEADERS[i], width));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(block)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ");
    frame.render_stateful_widget(table, body, &mut TableState::default().with_selected(Some(selected)));
}
