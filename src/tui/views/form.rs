//! Forms and questions as centred pop-ups. Each field takes two lines: the value, and
//! below it the complaint about it (or, on the focused field, a hint). The daemon's own
//! refusal, if it sent one, is at the bottom.

use super::text::clean;
use super::Theme;
use crate::tui::form::{Form, Input, PRICE};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

const LABEL_W: usize = 14;

pub fn draw(frame: &mut Frame, area: Rect, form: &Form, theme: Theme) {
    let mut lines: Vec<Line> = Vec::new();
    for (i, f) in form.fields.iter().enumerate() {
        let focused = i == form.focus;
        let marker = if focused { "▶ " } else { "  " };
        let label = Span::styled(format!("{marker}{:>w$}  ", f.label, w = LABEL_W), if focused { theme.header() } else { theme.dim() });
        let mut spans = vec![label];
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
        lines.push(Line::from(spans));
        let pad = " ".repeat(LABEL_W + 4);
        let note = if let Some(e) = &f.error {
            Line::from(vec![Span::raw(pad), Span::styled(format!("✗ {}", clean(e)), theme.bad())])
        } else if f.label == PRICE && form.price_unused() {
            Line::from(vec![Span::raw(pad), Span::styled("not used by a market order", theme.dim())])
        } else if focused {
            Line::from(vec![Span::raw(pad), Span::styled(f.hint, theme.dim())])
        } else {
            Line::raw("")
        };
        lines.push(note);
    }
    let status = if form.sending {
        Line::styled("sending…", theme.warn())
    } else if let Some(e) = &form.error {
        Line::from(vec![Span::styled("✗ ", theme.bad()), Span::raw(clean(e))])
    } else {
        Line::styled("Enter sends · Esc cancels", theme.dim())
    };

    // As tall as the lines take once wrapped: a long refusal (which says what to fix)
    // must not be cut, nor push the keys off the bottom.
    let inner_w = 72u16.min(area.width).saturating_sub(2).max(1) as usize;
    let height = |l: &Line| l.width().div_ceil(inner_w).max(1);
    let field_rows: usize = lines.iter().map(height).sum();
    let status_rows = height(&status);
    let popup = super::centered(area, 72, (field_rows + status_rows) as u16 + 3);
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(super::title(format!(" {} ", form.title()), popup));
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    // The status (the daemon's refusal, or the keys) keeps its rows at the bottom, and the
    // fields scroll above it: on a short terminal the field being typed in and its
    // complaint stay in sight, where a cut popup hid them and the user typed blind.
    let status_h = (status_rows as u16).min(inner.height);
    let fields_h = (inner.height - status_h).min(field_rows as u16);
    let fields_area = Rect { height: fields_h, ..inner };
    // The status takes every row below the fields: its height above is a guess (words
    // wrap whole), and the slack row keeps the end of a long refusal in sight.
    let status_area = Rect { y: inner.y + fields_h, height: inner.height - fields_h, ..inner };
    let focus_top: usize = lines.iter().take(form.focus * 2).map(height).sum();
    let focus_bottom = focus_top + lines.iter().skip(form.focus * 2).take(2).map(height).sum::<usize>();
    let scroll = focus_bottom.saturating_sub(fields_h as usize).min(focus_top) as u16;
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((scroll, 0)), fields_area);
    frame.render_widget(Paragraph::new(status).wrap(Wrap { trim: false }), status_area);
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
