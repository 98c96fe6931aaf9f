//! Webhook URLs: the one check of what the sender can POST to, and how a URL is shown.
//!
//! Every way a webhook comes in goes through [`parse_url`]: `[[notify.webhooks]]` in
//! `agt.toml` at start and when it is edited live, `config set` / `PUT /api/config`
//! (both by way of `settings::normalize_webhook`), and `POST /api/notifications/rules`.
//! So a URL accepted while the daemon runs is accepted at its next start, and one the
//! sender could not deliver to is refused when it is given, not failed quietly later.

use crate::api::quote::quoted;
use std::borrow::Cow;

/// The longest webhook URL, in bytes. The URL is copied into every delivery, its
/// `NOTIFICATION_*` events and `agt notify list`; the URI parser alone took up to 64 KiB.
pub const MAX_URL_BYTES: usize = 2048;

/// Parses a webhook URL into what the sender can POST to: `http://host[:port][/path]`,
/// with a port (if any) from 1 to 65535, no credentials and at most [`MAX_URL_BYTES`].
/// Messages show the URL as [`shown_url`] does, so a password in it never reaches an
/// answer or the log.
pub fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    // Quoted by its ends when long (`quoted`): an answer should not quote back a URL of
    // many kilobytes, nor of 2,000 bytes. Masked first, so that no half of a password is
    // left unmasked by the cut.
    let shown = quoted(&shown_url(url));
    if url.len() > MAX_URL_BYTES {
        return Err(format!("{shown} is {} bytes; a webhook URL is at most {MAX_URL_BYTES} bytes", url.len()));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{shown} is not a valid URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{shown}: https:// webhooks are not supported by this build of agt (it has no TLS client); \
                 use an http:// URL, e.g. a local TLS-terminating proxy"
            ))
        }
        _ => return Err(format!("{shown} is not an http:// URL such as \"http://127.0.0.1:9000/hook\"")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{shown} has no host; expected http://host[:port]/path"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("{shown}: credentials in the URL are not supported; set a secret to sign deliveries"));
    }
    if authority.host().is_empty() {
        return Err(format!("{shown} has no host; expected http://host[:port]/path"));
    }
    // The URI parser takes any text after the host's colon, and the HTTP client then
    // connects to port 80 when it is not a number it can use: a typo would be posted
    // to the wrong service and marked sent.
    if let Some(port) = port_text(authority.as_str()) {
        if !matches!(port.parse::<u16>(), Ok(1..)) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{shown}: the port must be a number from 1 to 65535, got {}", quoted(port)));
        }
    }
    Ok(uri)
}

/// The text after the host's `:` in an authority (`host:port`, `[v6]:port`), if there is
/// a colon.
fn port_text(authority: &str) -> Option<&str> {
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => &v6[v6.find(']')? + 1..],
        None => authority,
    };
    after_host.rfind(':').map(|at| &after_host[at + 1..])
}

/// A URL as the API, events, messages and the log show it: any `user:password@` replaced
/// by `***@`.
pub fn shown_url(url: &str) -> String {
    url_users_masked(url).into_owned()
}

/// `text` with the user part of every URL in it masked (`http://***@host/`), borrowed
/// when there is none.
pub fn url_users_masked(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://").map(|i| from + i + 3) {
        // The authority ends at the path, query, fragment, a quote or white space.
        let end = text[at..].find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace()).map_or(text.len(), |i| at + i);
        if let Some(user_end) = text[at..end].rfind('@').map(|i| at + i) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..at]);
            o.push_str(crate::services::config::settings::MASKED_SECRET);
            copied = user_end;
        }
        from = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_deliverable() {
        assert!(parse_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(parse_url("http://example.com").is_ok());
        assert!(parse_url("http://[::1]:8080/x").is_ok());
        assert!(parse_url("http://[::1]/x").is_ok());
        assert!(parse_url("https://example.com/hook").unwrap_err().contains("https"));
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("/just/a/path").is_err());
        assert!(parse_url("http://x/<>").is_err());
        assert!(parse_url("http://[::1/").is_err());
    }

    #[test]
    fn a_port_is_a_number_from_1_to_65535() {
        assert!(parse_url("http://127.0.0.1:65535/").is_ok());
        for url in [
            "http://127.0.0.1:99999/typo",
            "http://127.0.0.1:abc/",
            "http://127.0.0.1:0/",
            "http://h:/",
            "http://[::1]:x/",
            "http://h:+80/",
        ] {
            let e = parse_url(url).expect_err(url);
            assert!(e.contains("port") || e.contains("not a valid URL"), "{url}: {e}");
        }
        assert!(parse_url("http://127.0.0.1:99999/typo").unwrap_err().contains("from 1 to 65535"));
    }

    #[test]
    fn a_url_is_at_most_2048_bytes_and_a_longer_one_is_not_quoted_whole() {
        let url = |len: usize| format!("http://h/{}", "a".repeat(len - "http://h/".len()));
        assert!(parse_url(&url(MAX_URL_BYTES)).is_ok());
        let e = parse_url(&url(100_000)).unwrap_err();
        assert!(e.contains("100000 bytes") && e.contains("at most 2048 bytes") && e.len() < 200, "{e}");
        assert!(!parse_url(&format!("http://u:pw@h/{}", "é".repeat(2000))).unwrap_err().contains("pw"));
    }

    #[test]
    fn credentials_are_refused_and_never_shown() {
        for url in ["http://user:pw@127.0.0.1:18701/cred", "http://user:pw@h:99999/", "https://user:pw@h/", "ftp://user:pw@h/"] {
            let e = parse_url(url).expect_err(url);
            assert!(!e.contains("pw"), "{url}: {e}");
        }
        assert!(parse_url("http://user:pw@example.com/").unwrap_err().contains("***@example.com"));
    }

    #[test]
    fn shown_urls_hide_credentials() {
        assert_eq!(shown_url("http://u:p@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(shown_url("http://h/x"), "http://h/x");
    }
}
