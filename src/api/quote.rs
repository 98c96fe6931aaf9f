//! How a message quotes a value the caller sent. A message quoted it whole: a
//! 5,000-digit `--price` came back as 5,000 digits on stderr, and in the daemon's 400
//! body, burying what to fix. The CLI's checks and the daemon's refusals both quote
//! through here, so a long value reads the same everywhere.

/// The most characters of a value quoted whole; a longer one is shown as its head, `…`,
/// its tail and its length, which still shows what kind of value it was (digits, a
/// stray letter at the start, the end the user typed last).
const WHOLE: usize = 40;
const HEAD: usize = 16;
const TAIL: usize = 8;

/// `value` in quotes (as `{:?}` writes it: control characters escaped), whole when it is
/// at most 40 characters; else `"1111111111111111…11111111" (5000 characters)`.
pub fn quoted(value: &str) -> String {
    match ends(value) {
        None => format!("{value:?}"),
        Some((short, n)) => format!("{short:?} ({n} characters)"),
    }
}

/// Whether [`quoted`] shortens `value`.
pub fn is_long(value: &str) -> bool {
    value.chars().count() > WHOLE
}

/// A long value's head, `…` and tail, and its length in characters; `None` for one
/// shown whole.
fn ends(value: &str) -> Option<(String, usize)> {
    let n = value.chars().count();
    if n <= WHOLE {
        return None;
    }
    let head: String = value.chars().take(HEAD).collect();
    let tail: String = value.chars().skip(n - TAIL).collect();
    Some((format!("{head}…{tail}"), n))
}

/// `value` as a number is shown (unquoted), by the same rule as [`quoted`]: whole when it
/// is at most 40 characters, else `1111111111111111…11111111 (5000 characters)`. For a
/// number a client sent as a JSON or TOML number, which a message shows as it was written.
pub fn bare(value: &str) -> String {
    match ends(value) {
        None => value.to_string(),
        Some((short, n)) => format!("{short} ({n} characters)"),
    }
}

/// `message`, written by a library that names values a caller gave it whole (clap's
/// `invalid value '…'`, axum's path of a query error), with each long one of `given`
/// written as [`quoted`] writes it, wherever it appears, in single quotes or bare. The
/// longest first, so that an `--opt=VALUE` is not left half replaced by its VALUE.
pub fn quote_given(message: &str, given: impl IntoIterator<Item = String>) -> String {
    let mut long: Vec<String> = given.into_iter().filter(|a| is_long(a)).collect();
    long.sort_by_key(|a| std::cmp::Reverse(a.len()));
    let mut text = message.to_string();
    for a in &long {
        let short = quoted(a);
        text = text.replace(&format!("'{a}'"), &short).replace(a.as_str(), &short);
    }
    text
}

/// `message`, written by a library that quotes what it was given whole (serde's ``unknown
/// field `x` `` and `invalid type: string "x"`), with each `` `…` `` or `"…"` span of more
/// than 40 characters written as [`quoted`] writes it. The library cannot be told to
/// shorten them, and a 5,000-character key or enum value is as much noise in its words as
/// in ours. Spans are paired left to right; a `"` span is read with `{:?}`'s escapes (`\"`,
/// `\\`, `\n`, `\u{…}`), so the length it states is that of the value, not of its escapes.
pub fn quote_long_in(message: &str) -> std::borrow::Cow<'_, str> {
    if !is_long(message) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    let mut changed = false;
    while let Some(open) = rest.find(['`', '"']) {
        let delim = rest.as_bytes()[open];
        let body = &rest[open + 1..];
        let end = if delim == b'`' { body.find('`') } else { debug_string_end(body) };
        let Some(end) = end else { break };
        let inner = &body[..end];
        out.push_str(&rest[..open]);
        if is_long(inner) {
            let value = if delim == b'`' { inner.to_string() } else { unescape_debug(inner) };
            out.push_str(&quoted(&value));
            changed = true;
        } else {
            out.push_str(&rest[open..open + 1 + end + 1]);
        }
        rest = &body[end + 1..];
    }
    if !changed {
        return message.into();
    }
    out.push_str(rest);
    out.into()
}

/// Where a `{:?}`-quoted string's closing `"` is in `body` (the text after its opening one).
fn debug_string_end(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// The text `{:?}` quoted as `inner` (without its quotes); an escape it does not know is
/// kept as written.
fn unescape_debug(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let code: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                match u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                    Some(c) => out.push(c),
                    None => out.push_str(&format!("\\u{{{code}}}")),
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{bare, quote_long_in, quoted};

    #[test]
    fn a_short_value_is_quoted_whole_and_a_long_one_by_its_ends_and_length() {
        assert_eq!(quoted("10.5"), "\"10.5\"");
        let forty = "9".repeat(40);
        assert_eq!(quoted(&forty), format!("{forty:?}"));
        let long = format!("x{}7", "1".repeat(4998));
        assert_eq!(quoted(&long), "\"x111111111111111…11111117\" (5000 characters)");
        assert!(quoted(&long).chars().count() <= 48);
        // Characters, not bytes: a multi-byte letter is never split.
        let wide = "é".repeat(100);
        assert_eq!(quoted(&wide), format!("\"{}…{}\" (100 characters)", "é".repeat(16), "é".repeat(8)));
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn a_long_number_is_shown_bare_by_the_same_rule() {
        assert_eq!(bare("1e400"), "1e400");
        assert_eq!(bare(&"1".repeat(5000)), "1111111111111111…11111111 (5000 characters)");
    }

    #[test]
    fn long_spans_in_a_library_message_are_quoted_short_and_short_ones_kept() {
        let short = "unknown field `tif`, expected one of `user_id`, `symbol`, `side`";
        assert_eq!(quote_long_in(short), short);
        let key = "Z".repeat(5000);
        let serde = format!("unknown field `{key}`, expected `username` or `email`");
        assert_eq!(quote_long_in(&serde), "unknown field \"ZZZZZZZZZZZZZZZZ…ZZZZZZZZ\" (5000 characters), expected `username` or `email`");
        // A `{:?}` span: its length is the value's, its escapes read.
        let value = format!("a\"b\n{}", "x".repeat(60));
        let typed = format!("invalid type: string {value:?}, expected \"buy\" or \"sell\"");
        assert_eq!(quote_long_in(&typed), format!("invalid type: string {}, expected \"buy\" or \"sell\"", quoted(&value)));
        assert!(quote_long_in(&typed).contains("(64 characters)"));
        // An unpaired delimiter ends the search; what came before it is still shortened.
        let open = format!("`{key}` and a stray ` here");
        assert!(quote_long_in(&open).starts_with("\"ZZZZ") && quote_long_in(&open).ends_with("and a stray ` here"));
    }
}
