//! `agt health`: `GET /health`, waiting at most `daemon::PROBE_TIMEOUT` (a stopped or
//! hung daemon is named as such, exit 3, rather than holding the command for a minute).

use super::output::{cell, duration, field, Table};
use super::{CliResult, Ctx};
use serde_json::Value;

pub fn run(ctx: &Ctx) -> CliResult {
    let h = super::daemon::probe_health(ctx)?;
    ctx.show(&h, render)
}

/// Status, version and uptime, then one line per service.
pub fn render(h: &Value) -> String {
    let mut out = format!("status:   {}\nversion:  {}", field(h, "status"), super::daemon::version_and_build(h));
    if let Some(up) = h.get("uptime_s").and_then(Value::as_u64) {
        out.push_str(&format!("\nuptime:   {}", duration(up)));
    }
    if let Some(services) = h.get("services").and_then(Value::as_object).filter(|s| !s.is_empty()) {
        let mut t = Table::new(&["SERVICE", "STATE"]);
        for (name, state) in services {
            // A state may be a bare string or an object with its own `state`.
            let state = state.get("state").unwrap_or(state);
            t.row(vec![name.clone(), cell(state)]);
        }
        out.push_str("\n\n");
        out.push_str(&t.render());
    }
    out
}
