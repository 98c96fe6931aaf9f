//! Turning JSON answers into text for people: aligned tables and `key: value` views.
//!
//! The daemon writes decimals as strings; they are printed as they arrive, never
//! reparsed, so a table shows exactly what `-o json` would.

use serde_json::Value;

/// Columns of text, each as wide as its widest cell, separated by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines (header first), without a trailing newline.
    pub fn render(&self) -> String {
        let ncols = self.headers.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0usize; ncols];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in line.iter().enumerate() {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = Vec::with_capacity(self.rows.len() + 1);
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut s = String::new();
            for (i, c) in line.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(c);
                if i + 1 < line.len() {
                    s.push_str(&" ".repeat(widths[i] - width(c)));
                }
            }
            out.push(s.trim_end().to_string());
        }
        out.join("\n")
    }
}

/// The columns a cell takes on a terminal: a CJK character or an emoji takes two, a
/// combining mark none. Counting chars misaligned every column after such a cell.
fn width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// A value as one cell: strings as they are (control characters escaped, so a hostile
/// name cannot drive the terminal), `null` as `-`, anything else as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => clean(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => clean(&other.to_string()),
    }
}

/// `v[key]` as a cell; `-` when absent.
pub fn field(v: &Value, key: &str) -> String {
    v.get(key).map(cell).unwrap_or_else(|| "-".to_string())
}

/// The first of `keys` that `v` has, as a cell.
pub fn field_any(v: &Value, keys: &[&str]) -> String {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null())).map(cell).unwrap_or_else(|| "-".to_string())
}

/// Escapes control characters; everything else is kept byte for byte.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The items of a list answer: a bare array, or the one array inside an object
/// (`{"orders": [...]}`); an object keyed by name becomes its values with `name` added.
pub fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(m) => {
            let arrays: Vec<&Vec<Value>> = m.values().filter_map(Value::as_array).collect();
            if arrays.len() == 1 {
                return arrays[0].clone();
            }
            m.iter()
                .map(|(k, v)| match v {
                    Value::Object(inner) => {
                        let mut o = inner.clone();
                        o.entry("name").or_insert_with(|| Value::String(k.clone()));
                        Value::Object(o)
                    }
                    other => serde_json::json!({ "name": k, "value": other }),
                })
                .collect()
        }
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A table of `items` with the given (header, key) columns. A key may name alternatives
/// separated by `|` (`"type|kind"`), for answers whose field names vary.
pub fn table_of(items: &[Value], cols: &[(&str, &str)]) -> Table {
    let mut t = Table::new(&cols.iter().map(|(h, _)| *h).collect::<Vec<_>>());
    for it in items {
        t.row(cols.iter().map(|(_, k)| field_any(it, &k.split('|').collect::<Vec<_>>())).collect());
    }
    t
}

/// A table whose columns are the keys of the first item (for answers of unknown shape).
pub fn auto_table(items: &[Value]) -> Table {
    let keys: Vec<String> = match items.first() {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => {
            let mut t = Table::new(&["VALUE"]);
            for it in items {
                t.row(vec![cell(it)]);
            }
            return t;
        }
    };
    let headers: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    let mut t = Table::new(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    for it in items {
        t.row(keys.iter().map(|k| field(it, k)).collect());
    }
    t
}

/// A list for people: the table, or a note that there is nothing.
pub fn list_or_none(t: Table, none: &str) -> String {
    if t.is_empty() {
        none.to_string()
    } else {
        t.render()
    }
}

/// `key: value` lines for an object, nested objects flattened to dotted keys; lists of
/// scalars inline, lists of objects as compact JSON.
pub fn kv(v: &Value) -> String {
    let mut pairs = Vec::new();
    flatten("", v, &mut pairs);
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k}:{}{v}", " ".repeat(w - width(k) + 1))).collect::<Vec<_>>().join("\n")
}

/// Flattens an object into (dotted key, cell) pairs.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Array(a) if a.is_empty() => out.push((clean(prefix), "[]".into())),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((clean(prefix), a.iter().map(cell).collect::<Vec<_>>().join(", ")));
        }
        _ if prefix.is_empty() => out.push(("value".into(), cell(v))),
        other => out.push((clean(prefix), cell(other))),
    }
}

/// Seconds as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["ID", "STATUS", "QTY"]);
        t.row(vec!["a".into(), "new".into(), "1".into()]);
        t.row(vec!["bbbb".into(), "partially_filled".into(), "10.5".into()]);
        assert_eq!(t.render(), "ID    STATUS            QTY\na     new               1\nbbbb  partially_filled  10.5");
    }

    /// Wide characters (a token named in Japanese with an emoji, an e-mail address
    /// with a CJK domain) take two columns each: the next column still lines up.
    #[test]
    fn aligns_columns_of_wide_characters() {
        let mut t = Table::new(&["NAME", "EMAIL", "ROLE"]);
        t.row(vec!["日本語トークン🚀".into(), "ü@例え.jp".into(), "viewer".into()]);
        t.row(vec!["plain".into(), "a@b.c".into(), "admin".into()]);
        let text = t.render();
        let at = |line: &str, col: &str| unicode_width::UnicodeWidthStr::width(&line[..line.find(col).unwrap()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(at(lines[0], "ROLE"), at(lines[1], "viewer"), "{text}");
        assert_eq!(at(lines[1], "viewer"), at(lines[2], "admin"), "{text}");
        assert_eq!(at(lines[0], "EMAIL"), 18, "the wide name is 16 columns, then two spaces: {text}");
        assert_eq!(kv(&json!({"名前": "x", "id": "y"})), "id:   y\n名前: x");
    }

    #[test]
    fn cells_and_views() {
        assert_eq!(cell(&json!("10.50")), "10.50");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("a\u{1b}[2J")), "a\\u{1b}[2J");
        assert_eq!(kv(&json!({"a": 1, "b": {"c": "x"}, "d": ["p", "q"]})), "a:   1\nb.c: x\nd:   p, q");
        assert_eq!(items(&json!({"orders": [1, 2]})).len(), 2);
        let by_name = items(&json!({"market": {"state": "running"}}));
        assert_eq!(by_name[0]["name"], "market");
        assert_eq!(duration(3725), "1h 2m");
    }
}
