//! Forms and questions as centred pop-ups. Each field takes two lines: the value, and
//! below it the complaint about it (or, on the focused field, a hint). The daemon's own
//! refusal, if it sent one, is at the bottom.

use super::text::{clean, wrap};
use super::Theme;
use crate::tui::form::{Form, Input, PRICE};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// The value's room below which a field's label goes on its own row above the value: a
/// label column beside it left a narrow terminal a few letters, and hints wrapped under
/// the labels.
const MIN_VALUE_W: usize = 16;
/// The smallest terminal a form is drawn in: a field's row and the keys, inside a border.
/// Below it, the form says how big the terminal must be instead of an empty box.
const MIN_W: u16 = 20;
const MIN_H: u16 = 5;
/// The form's width where there is room: its widest field and the daemon's refusals.
const FORM_W: u16 = 72;
/// The keys under the fields, and what they say where that does not fit on one row.
const KEYS: &str = "Enter sends · Esc cancels";
const SHORT_KEYS: &str = "Enter · Esc";

pub fn draw(frame: &mut Frame, area: Rect, form: &Form, theme: Theme) {
    if area.width < MIN_W || area.height < MIN_H {
        too_small(frame, area, form, theme);
        return;
    }
    let inner_w = FORM_W.min(area.width).saturating_sub(2).max(1) as usize;
    // Labels right-aligned to the form's longest ("Time in force"; a transfer's "Amount").
    let label_w = form.fields.iter().map(|f| f.label.chars().count()).max().unwrap_or(0);
    let stacked = inner_w < label_w + 4 + MIN_VALUE_W;
    // Each field's lines, with the field they belong to: scrolling keeps the focused
    // field's in sight.
    let mut lines: Vec<(usize, Line)> = Vec::new();
    for (i, f) in form.fields.iter().enumerate() {
        let focused = i == form.focus;
        let marker = if focused { "▶ " } else { "  " };
        let label_style = if focused { theme.header() } else { theme.dim() };
        let mut spans = Vec::new();
        if stacked {
            lines.push((i, Line::styled(format!("{marker}{}", f.label), label_style)));
            spans.push(Span::raw("    "));
        } else {
            spans.push(Span::styled(format!("{marker}{:>label_w$}  ", f.label), label_style));
        }
        match &f.input {
            Input::Text(s) => {
                spans.push(Span::raw(clean(s)));
                if focused {
                    spans.push(Span::styled("█", theme.key()));
                }
            }
            Input::Choice { options, index } => {
                for (j, o) in options.iter().enumerate() {
                    if j == *index {
                        spans.push(Span::styled(format!("[{o}]"), if focused { theme.key() } else { theme.header() }));
                    } else {
                        spans.push(Span::styled(format!(" {o} "), theme.dim()));
                    }
                }
            }
        }
        lines.push((i, Line::from(spans)));
        let pad = if stacked { 4 } else { label_w + 4 };
        let note = if let Some(e) = &f.error {
            note_lines(pad, "✗ ", &clean(e), theme.bad(), inner_w)
        } else if f.label == PRICE && form.price_unused() {
            note_lines(pad, "", "not used by a market order", theme.dim(), inner_w)
        } else if focused {
            note_lines(pad, "", f.hint, theme.dim(), inner_w)
        } else if stacked {
            // Stacked, the labels keep the fields apart.
            Vec::new()
        } else {
            // Beside the labels, a blank row keeps the fields apart.
            vec![Line::raw("")]
        };
        lines.extend(note.into_iter().map(|n| (i, n)));
    }
    let status = if form.sending {
        Line::styled("sending…", theme.warn())
    } else if let Some(e) = &form.error {
        Line::from(vec![Span::styled("✗ ", theme.bad()), Span::raw(clean(e))])
    } else if inner_w >= KEYS.chars().count() {
        Line::styled(KEYS, theme.dim())
    } else {
        // Wrapped, the keys took a second row from the field being typed in.
        Line::styled(SHORT_KEYS, theme.dim())
    };

    // As tall as the lines take once wrapped: a long refusal (which says what to fix)
    // must not be cut, nor push the keys off the bottom.
    // Counted as ratatui wraps them: an estimate from the width was off for a line of
    // spaces (a stacked field's empty value), and scrolled the focused value out of sight.
    let height = |l: &Line| Paragraph::new(l.clone()).wrap(Wrap { trim: false }).line_count(inner_w as u16).max(1);
    let field_rows: usize = lines.iter().map(|(_, l)| height(l)).sum();
    let status_rows = height(&status);
    let popup = super::centered(area, FORM_W, (field_rows + status_rows) as u16 + 3);
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(super::title(format!(" {} ", form.title()), popup));
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    // The status (the daemon's refusal, or the keys) keeps its rows at the bottom, less
    // the rows the focused field needs (its value; stacked, its label and its value), and
    // the fields scroll above it: on a short terminal the field being typed in and its
    // complaint stay in sight, where a cut popup hid them and the user typed blind.
    let head = if stacked { 2 } else { 1 };
    let focus_head: usize = lines.iter().filter(|(i, _)| *i == form.focus).take(head).map(|(_, l)| height(l)).sum();
    let status_h = (status_rows as u16).min(inner.height.saturating_sub(focus_head as u16));
    let fields_h = (inner.height - status_h).min(field_rows as u16);
    let fields_area = Rect { height: fields_h, ..inner };
    // The status takes every row below the fields: its height above is a guess (words
    // wrap whole), and the slack row keeps the end of a long refusal in sight.
    let status_area = Rect { y: inner.y + fields_h, height: inner.height - fields_h, ..inner };
    let focus_top: usize = lines.iter().take_while(|(i, _)| *i < form.focus).map(|(_, l)| height(l)).sum();
    let focus_rows: usize = lines.iter().filter(|(i, _)| *i == form.focus).map(|(_, l)| height(l)).sum();
    // The focused field's first rows (its label and value) before its note, where all
    // of it does not fit.
    let scroll = (focus_top + focus_rows).saturating_sub(fields_h as usize).min(focus_top) as u16;
    let lines: Vec<Line> = lines.into_iter().map(|(_, l)| l).collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((scroll, 0)), fields_area);
    frame.render_widget(Paragraph::new(status).wrap(Wrap { trim: false }), status_area);
}

/// A field's note (its complaint, or a hint) in rows that start `pad` columns in, under
/// the value, each continuation under the note's first letter (after the `prefix`, the
/// `✗ ` of a complaint), broken between words. Wrapped as one line by ratatui, a long
/// complaint went on at the form's first column, under the labels, and read as another
/// field's.
fn note_lines(pad: usize, prefix: &str, text: &str, style: Style, inner_w: usize) -> Vec<Line<'static>> {
    let indent = pad + prefix.chars().count();
    let rows = wrap(text, inner_w.saturating_sub(indent), usize::MAX);
    rows.into_iter()
        .enumerate()
        .map(|(r, row)| {
            let lead = if r == 0 {
                vec![Span::raw(" ".repeat(pad)), Span::styled(prefix.to_string(), style)]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            Line::from(lead.into_iter().chain([Span::styled(row, style)]).collect::<Vec<_>>())
        })
        .collect()
}

/// Too small a terminal for any field: what the form is, and the size it needs, where
/// the box would have been empty.
fn too_small(frame: &mut Frame, area: Rect, form: &Form, theme: Theme) {
    frame.render_widget(Clear, area);
    let lines = vec![
        Line::styled(form.title(), theme.header()),
        Line::styled(format!("terminal too small: need {MIN_W}×{MIN_H}"), theme.warn()),
        Line::styled("Esc cancels", theme.dim()),
    ];
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

pub fn confirm(frame: &mut Frame, area: Rect, question: &str, theme: Theme) {
    let lines = vec![
        Line::raw(clean(question)),
        Line::raw(""),
        Line::from(vec![Span::styled("y", theme.key()), Span::raw(" yes   "), Span::styled("n", theme.key()), Span::raw(" no")]),
    ];
    let popup = super::centered(area, 70, 6);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(super::title(" Confirm ", popup))),
        popup,
    );
}
