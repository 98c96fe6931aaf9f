//! Turning wire values into short, fixed-width words for tables.

use crate::api::OrderStatus;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use rust_decimal::Decimal;

/// `45s`, `12m03s`, `3h02m`, `2d04h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `HH:MM:SS` of an RFC 3339 timestamp (UTC, as the daemon writes them).
pub fn clock(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// A decimal without trailing zeros.
pub fn dec(d: Decimal) -> String {
    d.normalize().to_string()
}

/// A price with the decimals of its instrument's tick (`150.00` on a 0.01 tick), so a
/// column of prices lines up; without a known tick, as [`dec`].
pub fn price(p: Decimal, decimals: Option<u32>) -> String {
    match decimals {
        // Padded to the tick's places, never rounded to them: an average price has more
        // (190.552666666667 showed as 190.55).
        Some(n) if p.normalize().scale() <= n => format!("{:.*}", n as usize, p),
        _ => dec(p),
    }
}

/// Status words that fit a column; `partially_filled` is the only long one.
pub fn status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::PartiallyFilled => "part-filled",
        other => other.as_str(),
    }
}

/// `n µs`, `n.nn ms`.
pub fn micros(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Cuts `s` to `max` characters, marking the cut with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// `s` split at `room` display columns: what fits, and the rest.
fn split_at_width(s: &str, room: usize) -> (&str, &str) {
    use unicode_width::UnicodeWidthChar;
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.width().unwrap_or(0);
        if used > room {
            return s.split_at(i);
        }
    }
    (s, "")
}

/// `s` in rows of at most `width` columns, at most `rows` of them. Words stay whole where
/// they fit on a row (a longer one is split). Where the text needs more rows, the last
/// holds what fits of the rest and ends in `…`: ratatui's wrap cut a long message at the
/// bottom of its area, and nothing said that words were missing.
pub fn wrap(s: &str, width: usize, rows: usize) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let width = width.max(1);
    let mut out: Vec<String> = Vec::new();
    let mut row = String::new();
    for word in s.split(' ') {
        if !row.is_empty() && row.width() + 1 + word.width() <= width {
            row.push(' ');
            row.push_str(word);
            continue;
        }
        if !row.is_empty() {
            out.push(std::mem::take(&mut row));
        }
        let mut rest = word;
        while rest.width() > width {
            let (head, tail) = split_at_width(rest, width);
            // A character wider than the whole row: shown alone, cut by the terminal.
            let (head, tail) = if head.is_empty() { rest.split_at(rest.chars().next().map_or(0, char::len_utf8)) } else { (head, tail) };
            out.push(head.to_string());
            rest = tail;
        }
        row.push_str(rest);
    }
    if !row.is_empty() || out.is_empty() {
        out.push(row);
    }
    if out.len() > rows.max(1) {
        let last = out.split_off(rows.max(1) - 1).join(" ");
        let (head, _) = split_at_width(&last, width - 1);
        out.push(format!("{head}…"));
    }
    out
}

/// The filter being typed, as the footer shows it between its `/` and the cursor `█` in
/// `room` columns for the three. Where the text does not fit,
/// its tail with a leading `…`: cut at the end, the line lost the cursor and the letters
/// just typed, and the user typed blind.
pub fn filter_prompt(filter: &str, room: usize) -> String {
    use unicode_width::UnicodeWidthStr;
    let text_room = room.saturating_sub(2);
    if filter.width() <= text_room {
        filter.to_string()
    } else {
        // The tail that fits after the `…`: skip characters from the front until it does.
        let keep = text_room.saturating_sub(1);
        let mut tail = filter;
        while tail.width() > keep {
            let mut chars = tail.chars();
            chars.next();
            tail = chars.as_str();
        }
        if text_room == 0 {
            String::new()
        } else {
            format!("…{tail}")
        }
    }
}

/// The width each column of a `Table` gets inside `inner` (the area within its block), as
/// the table lays them out: columns from the left, one space between them, after
/// `reserved` columns for a highlight symbol. Cells cut to these widths with [`cut`] end
/// in `…`, where the table itself would cut them without a mark, and a number cut short
/// would read as another number (`123456789016.04595678` as `123456789016.0`).
pub fn column_widths(inner: Rect, widths: &[Constraint], reserved: u16) -> Vec<usize> {
    let area = Rect { x: inner.x + reserved.min(inner.width), width: inner.width.saturating_sub(reserved), ..inner };
    Layout::horizontal(widths.iter().copied()).flex(Flex::Start).spacing(1).split(area).iter().map(|r| usize::from(r.width)).collect()
}

/// The width a column needs to show its longest value whole, within `min..=max`.
pub fn fit<'a>(values: impl Iterator<Item = &'a str>, min: usize, max: usize) -> usize {
    values.map(|v| v.chars().count()).max().unwrap_or(0).clamp(min, max)
}

/// The width of each of a table's columns in `room` columns (after the highlight mark), 0
/// for one left out: each column's `need` (the width that shows its values whole), taken
/// in `rank` order, the most telling first, while they fit with a space between them. One
/// that does not fit whole takes the rest where that is at least `least` (its values cut
/// with `…`), so a long action leaves the actor a few letters rather than none. A column
/// left out is whole in the row's detail (Enter); every column squeezed in beside the
/// others showed a few letters of each value, cut mid-word (`runnin`, `ORDER_CR`). The
/// first-ranked column always shows, cut to the room if it must be.
pub fn share(room: usize, needs: &[usize], least: usize, rank: &[usize]) -> Vec<usize> {
    let mut widths = vec![0; needs.len()];
    let mut used = 0;
    for &i in rank {
        let left = room.saturating_sub(used + usize::from(used > 0));
        let width = needs[i].min(left);
        if width > 0 && (width == needs[i] || width >= least) {
            widths[i] = width;
            used += width + usize::from(used > 0);
        }
    }
    if let (true, Some(&first)) = (widths.iter().all(|w| *w == 0), rank.first()) {
        widths[first] = room.min(needs[first]);
    }
    widths
}

/// A column's header in `width` columns: its name, else its short form (`RST` for
/// `RESTARTS`), else the short form cut with `…`: the table cut `RESTARTS` to `RESTAR`.
pub fn heading(name: &str, short: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        cut(short, width)
    }
}

/// Control characters (from hostile names or messages) would move the cursor: replace them.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '�' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_is_padded_to_its_tick_but_never_rounded_to_it() {
        let d = |t: &str| t.parse::<Decimal>().unwrap();
        assert_eq!(price(d("190.5"), Some(2)), "190.50");
        assert_eq!(price(d("190.552666666667"), Some(2)), "190.552666666667");
        assert_eq!(price(d("190.5500"), Some(2)), "190.55");
        assert_eq!(price(d("7"), None), "7");
    }

    #[test]
    fn a_long_text_wraps_at_words_and_ends_in_a_mark_where_rows_run_out() {
        assert_eq!(wrap("the quick brown fox", 9, 3), ["the quick", "brown fox"]);
        assert_eq!(wrap("", 9, 3), [""]);
        assert_eq!(wrap("abcdefghijkl", 5, 3), ["abcde", "fghij", "kl"]);
        let rows = wrap("one two three four five six seven eight", 9, 3);
        assert_eq!(rows, ["one two", "three", "four fiv…"]);
        assert!(rows.iter().all(|r| r.chars().count() <= 9));
        assert_eq!(wrap("a b c", 1, 2), ["a", "…"]);
    }

    /// The cursor stays on screen, right after what was typed, however long the filter.
    #[test]
    fn a_long_filter_shows_its_tail_and_the_cursor() {
        assert_eq!(filter_prompt("bob", 10), "bob");
        assert_eq!(filter_prompt("abcdefgh", 10), "abcdefgh", "exactly the room");
        assert_eq!(filter_prompt("abcdefghi", 10), "…cdefghi", "the tail, marked");
        // Wide characters count two columns each.
        assert_eq!(filter_prompt("日本語の株式", 8), "…株式");
        for room in 2..12 {
            let shown = filter_prompt("user:alice sym:AAPL", room);
            use unicode_width::UnicodeWidthStr;
            assert!(shown.width() + 2 <= room && "user:alice sym:AAPL".ends_with(shown.trim_start_matches('…')), "{room}: {shown:?}");
        }
    }

    /// The most telling columns first, whole while they fit, then cut where at least
    /// `least` is left; a smaller one after a big one that did not fit; the first always.
    #[test]
    fn columns_share_the_room_by_rank() {
        assert_eq!(share(20, &[5, 10, 3], 4, &[1, 0, 2]), [5, 10, 3]);
        assert_eq!(share(15, &[5, 10, 3], 5, &[1, 0, 2]), [0, 10, 3], "4 left of 5: out, and 3 fits");
        assert_eq!(share(15, &[5, 10, 3], 4, &[1, 0, 2]), [4, 10, 0], "4 left of 5: cut");
        assert_eq!(share(16, &[5, 10, 3], 4, &[1, 0, 2]), [5, 10, 0]);
        assert_eq!(share(4, &[5, 10, 3], 5, &[1, 0, 2]), [0, 0, 3]);
        assert_eq!(share(2, &[5, 10, 3], 5, &[1, 0, 2]), [0, 2, 0], "none fits: the first, cut");
    }

    #[test]
    fn words() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(723), "12m03s");
        assert_eq!(duration(3 * 3600 + 120), "3h02m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2d04h");
        assert_eq!(clock("2024-05-01T12:34:56.123456Z"), "12:34:56");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(heading("RESTARTS", "RST", 9), "RESTARTS");
        assert_eq!(heading("RESTARTS", "RST", 4), "RST");
        assert_eq!(heading("RESTARTS", "RST", 2), "R…");
        assert_eq!(micros(85), "85 µs");
        assert_eq!(micros(1500), "1.50 ms");
        assert_eq!(clean("a\x1b[2Jb"), "a�[2Jb");
        assert_eq!(price(Decimal::new(150, 0), Some(2)), "150.00");
        assert_eq!(price(Decimal::new(15025, 2), None), "150.25");
    }
}
