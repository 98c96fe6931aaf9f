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
        Line::from(vec![Span::styled("✗ the daemon refused: ", theme.bad()), Span::raw(clean(e))])
    } else {
        Line::styled("Enter sends · Esc cancels", theme.dim())
    };
    lines.push(status);

    // As tall as the lines take once wrapped: a long refusal (which says what to fix)
    // must not be cut, nor push the keys off the bottom.
    let inner = 72u16.min(area.width).saturating_sub(2).max(1) as usize;
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let popup = super::centered(area, 72, rows as u16 + 3);
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(format!(" {} ", form.title()));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), popup);
}

pub fn confirm(frame: &mut Frame, area: Rect, question: &str, theme: Theme) {
    let lines = vec![
        Line::raw(clean(question)),
        Line::raw(""),
        Line::from(vec![Span::styled("y", theme.key()), Span::raw(" yes   "), Span::styled("n", theme.key()), Span::raw(" no")]),
    ];
    let popup = super::centered(area, 70, 6);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" Confirm ")), popup);
}
