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
    let n = value.chars().count();
    if n <= WHOLE {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(HEAD).collect();
    let tail: String = value.chars().skip(n - TAIL).collect();
    format!("{:?} ({n} characters)", format!("{head}…{tail}"))
}

#[cfg(test)]
mod tests {
    use super::quoted;

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
}
