//! What audit must not keep of a command: every command's query and body are recorded
//! (`command_detail`), and audit records are read by viewers, so anything that could be a
//! credential is masked as [`MASKED_SECRET`] first. A credential is the value of a key or
//! query parameter whose name says so ([`names_credential`]), a string that carries one
//! (`secret = "…"` inside a webhook list sent as text), or the user and password of a URL
//! (`http://user:pw@host/`).

use crate::services::config::settings::MASKED_SECRET;
use crate::services::notify::url::url_users_masked;
use std::borrow::Cow;

/// The words a credential's name holds, in lower case: `secret`, `password`/`passwd`,
/// `token`, and names ending in `key` (`signing_key`, `api_key`).
const WORDS: [&[u8]; 3] = [b"secret", b"passw", b"token"];

/// Whether `name` (a key or a query parameter) names a credential.
fn names_credential(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.as_bytes().windows(w.len()).any(|x| x == *w)) || lower.ends_with("key")
}

/// Whether a body could hold a credential: one of [`WORDS`] or `key` in any case, a `\u`
/// escape that could spell one, or a URL with a user in it (`://` and `@`). Every
/// command's body passes here (orders included), so it looks at bytes and allocates
/// nothing; a body it passes is kept as it came.
pub fn may_name_secret(body: &[u8]) -> bool {
    let url_user = body.contains(&b'@');
    // One pass, comparing only where a needle's first byte is.
    (0..body.len()).any(|i| {
        let rest = &body[i..];
        let starts = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
        match body[i].to_ascii_lowercase() {
            b's' | b'p' | b't' => WORDS.iter().any(|w| starts(w)),
            b'k' => starts(b"key"),
            b'\\' => rest.get(1) == Some(&b'u'),
            b':' => url_user && rest.starts_with(b"://"),
            _ => false,
        }
    })
}

/// Masks what could be a credential in a parsed body: the value of any key that names one
/// (`secret`, and keys such as `notify.webhooks.0.secret`, which `config set` sends and
/// the daemon refuses, but audit records anyway), any string that carries one inside it
/// (a webhook list sent as a string of JSON or TOML), and the user and password of every
/// URL in a string.
pub fn mask_secrets(v: &mut serde_json::Value) {
    let masked = || serde_json::Value::String(MASKED_SECRET.into());
    match v {
        serde_json::Value::Object(map) => {
            for (k, inner) in map.iter_mut() {
                if names_credential(k) && !inner.is_null() {
                    *inner = masked();
                } else {
                    mask_secrets(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        serde_json::Value::String(text) if carries_secret(text) => *v = masked(),
        serde_json::Value::String(text) => {
            if let Cow::Owned(shown) = url_users_masked(text) {
                *text = shown;
            }
        }
        _ => {}
    }
}

/// Whether a string holds a credential's key with a value: `"secret": …` or `token = …`.
fn carries_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    WORDS.iter().chain([&b"key"[..]].iter()).any(|w| {
        let w = std::str::from_utf8(w).expect("ASCII");
        lower.match_indices(w).any(|(at, word)| {
            let rest = lower[at + word.len()..]
                .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
                .trim_start_matches(|c: char| c == '"' || c == '\'' || c == '\\' || c.is_whitespace());
            rest.starts_with(':') || rest.starts_with('=')
        })
    })
}

/// A command's query string with the value of every parameter that names a credential
/// masked (`?token=…`), and URL users masked; borrowed when there is nothing to mask.
pub fn query(q: &str) -> Cow<'_, str> {
    if !may_name_secret(q.as_bytes()) && !q.contains("%3A%2F%2F") && !q.contains("%3a%2f%2f") {
        return Cow::Borrowed(q);
    }
    let pairs: Vec<String> = q
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decoded(value);
            if (names_credential(&percent_decoded(name)) && !value.is_empty()) || carries_secret(&decoded) {
                format!("{name}={MASKED_SECRET}")
            } else if let Cow::Owned(shown) = url_users_masked(&decoded) {
                format!("{name}={shown}")
            } else {
                pair.to_string()
            }
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

fn percent_decoded(text: &str) -> String {
    let plus = text.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_are_masked() {
        assert_eq!(query("symbol=AAPL&limit=5"), "symbol=AAPL&limit=5");
        assert!(matches!(query("symbol=AAPL"), Cow::Borrowed(_)));
        assert_eq!(query("secret=S1&token=T1&x=1"), "secret=***&token=***&x=1");
        assert_eq!(query("API_KEY=K&Password=P"), "API_KEY=***&Password=***");
        assert_eq!(query("to=http%3A%2F%2Fu%3Apw%40h%2Fx"), "to=http://***@h/x");
        assert_eq!(query("token="), "token=", "nothing to mask");
    }

    #[test]
    fn the_user_of_a_url_is_masked_wherever_it_is() {
        assert_eq!(url_users_masked("http://user:pw@127.0.0.1:9/y"), "http://***@127.0.0.1:9/y");
        assert_eq!(url_users_masked("a http://u@h and https://v:w@k/p?q=1#f"), "a http://***@h and https://***@k/p?q=1#f");
        assert!(matches!(url_users_masked("http://h/x?mail=a@b"), Cow::Borrowed(_)), "an @ after the path is not a user");
        let mut v =
            serde_json::json!({"notify.webhooks": [{"url": "http://u:PW@h/x", "events": ["*"]}], "signing_key": "K", "n": "keyboard"});
        mask_secrets(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"notify.webhooks": [{"url": "http://***@h/x", "events": ["*"]}], "signing_key": "***", "n": "keyboard"})
        );
    }

    #[test]
    fn a_body_of_an_order_is_passed_as_it_came() {
        let order = br#"{"user_id":"usr_0123456789abcdef","symbol":"AAPL","side":"buy","type":"limit","quantity":"5","price":"190.5","client_order_id":"c-1"}"#;
        assert!(!may_name_secret(order));
        for b in [&br#"{"Token": 1}"#[..], br#"{"api_KEY": 1}"#, br#"{"url": "http://u@h"}"#, br#"{"passwd": 1}"#] {
            assert!(may_name_secret(b), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn a_string_that_carries_a_credential_is_masked_whole() {
        assert!(carries_secret(r#"[{"url":"http://h","secret":"S"}]"#));
        assert!(carries_secret("[[notify.webhooks]]\nsigning_key = \"K\""));
        assert!(carries_secret("token: abc"));
        assert!(!carries_secret("a secret plan, tokens of esteem"));
    }
}
