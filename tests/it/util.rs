//! A real daemon on a temporary home, driven like a user would: over its Unix socket, over
//! TCP, and through the `agt` binary.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agt");

pub struct Daemon {
    pub home: tempfile::TempDir,
    child: Option<Child>,
    pub http: Option<String>,
    /// Extra environment for every start of this daemon (test-only knobs such as
    /// `AGT_NOTIFY_BACKOFF_MS`).
    pub env: Vec<(String, String)>,
}

/// The config every test daemon gets: TCP on a free port, fault injection on.
pub const BASE_CONFIG: &str = "[http]\nlisten = \"127.0.0.1:0\"\n\n[debug]\nfault_injection = true\n";

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::with_config("")
    }

    pub fn with_config(extra: &str) -> Daemon {
        Daemon::with_config_env(extra, &[])
    }

    /// A daemon with extra config and extra environment variables.
    pub fn with_config_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::unstarted(extra, env);
        d.spawn();
        d
    }

    /// A home with its config and no daemon yet, for a test that puts files there before
    /// the first start; `spawn` starts it.
    pub fn unstarted(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
        std::fs::write(home.path().join("agt.toml"), format!("{BASE_CONFIG}\n{extra}\n")).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon { home, child: None, http: None, env }
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    pub fn sock(&self) -> PathBuf {
        self.path().join("agt.sock")
    }

    /// Starts `agt daemon run` and waits until agtd.json names it and /ready answers 200.
    pub fn spawn(&mut self) {
        self.spawn_until(true)
    }

    /// Starts `agt daemon run` and waits only until agtd.json names it (its listeners
    /// are up), for a test of what a daemon answers while it is not ready.
    pub fn spawn_listening(&mut self) {
        self.spawn_until(false)
    }

    fn spawn_until(&mut self, ready: bool) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("daemon.out")).unwrap();
        let child = Command::new(BIN)
            .args(["--home", self.path().to_str().unwrap(), "daemon", "run"])
            .env_remove("AGT_URL")
            .env_remove("AGT_TOKEN")
            .env_remove("AGT_SOCKET")
            .env_remove("AGT_HTTP_ADDR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("agt daemon run");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited during start-up ({status}): {}", self.log());
            }
            if let Ok(text) = std::fs::read_to_string(self.path().join("agtd.json")) {
                if let Ok(info) = serde_json::from_str::<Value>(&text) {
                    if info["pid"].as_u64() == Some(pid as u64) && (!ready || self.try_get("/ready").is_some_and(|(s, _)| s == 200)) {
                        self.http = info["http"].as_str().map(String::from);
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "daemon not ready in 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.out")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    /// SIGTERM, then the exit status if the daemon ends within `within`; `None` if it
    /// does not (it is killed then, so that a hang fails the test instead of hanging it).
    pub fn stop_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let stream = UnixStream::connect(self.sock()).ok()?;
        exchange(stream, "GET", path, None, &[]).ok()
    }

    /// One request over the Unix socket (a read answered behind is asked again: [`current`]).
    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        current(method, path, || {
            let stream = UnixStream::connect(self.sock()).expect("connect to the socket");
            exchange_marked(stream, method, path, body.as_deref(), &[]).expect("HTTP exchange")
        })
    }

    /// A request with a raw body (malformed JSON and the like) and extra headers.
    pub fn raw(&self, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        current(method, path, || {
            let stream = UnixStream::connect(self.sock()).expect("connect to the socket");
            exchange_marked(stream, method, path, Some(body), headers).expect("HTTP exchange")
        })
    }

    /// One request over TCP, with an optional bearer token.
    pub fn tcp(&self, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let addr = self.http.as_ref().expect("TCP is on");
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let body = body.map(|b| b.to_string());
        current(method, path, || {
            let stream = std::net::TcpStream::connect(addr).expect("connect over TCP");
            exchange_marked(stream, method, path, body.as_deref(), &headers).expect("HTTP exchange")
        })
    }

    /// One request over TCP with a raw body and a bearer token.
    pub fn tcp_raw(&self, method: &str, path: &str, body: &str, token: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        current(method, path, || {
            let stream = std::net::TcpStream::connect(self.tcp_addr()).expect("connect over TCP");
            exchange_marked(stream, method, path, Some(body), &[("Authorization", auth.as_str())]).expect("HTTP exchange")
        })
    }

    /// The daemon's TCP address.
    pub fn tcp_addr(&self) -> &str {
        self.http.as_deref().expect("TCP is on")
    }

    /// `agt --home H ARGS`, ready to run and assert on.
    pub fn cli(&self) -> assert_cmd::Command {
        cli_at(self.path())
    }

    /// `agt --home H ARGS` run to its end, and run again while it succeeded but warned on
    /// stderr that an answer was read behind the event bus ([`BEHIND_WARNING`]: a machine
    /// too loaded for the feeds), for up to [`STALE_FOR`], as [`current`] asks an HTTP
    /// read again: for a test that reads its own writes through the CLI (the audit log,
    /// the tape, candles, events, deliveries), none of which is about a stale read.
    pub fn cli_current(&self, args: &[&str]) -> std::process::Output {
        let deadline = Instant::now() + STALE_FOR;
        loop {
            let out = self.cli().args(args).output().expect("run agt");
            let warned = String::from_utf8_lossy(&out.stderr).contains(BEHIND_WARNING);
            if !(out.status.success() && warned) || Instant::now() >= deadline {
                return out;
            }
            eprintln!("agt {} answered behind the bus: asking again", args.join(" "));
        }
    }

    /// `agt --home H ARGS` started in the background with its output piped, for a test
    /// that acts while it runs (kills the daemon, sends a signal) and then reads it.
    pub fn cli_spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(BIN)
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("AGT_URL")
            .env_remove("AGT_TOKEN")
            .env_remove("AGT_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agt")
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.req(method, path, body.clone());
        assert!((200..300).contains(&s), "{method} {path} {body:?} -> {s} {v}");
        v
    }

    /// The events of some types (comma-separated), from the NDJSON of `GET /api/events`.
    pub fn events(&self, types: &str) -> Vec<Value> {
        match self.ok("GET", &format!("/api/events?type={types}"), None) {
            Value::String(text) => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
            one @ Value::Object(_) => vec![one],
            other => panic!("events: {other}"),
        }
    }

    pub fn user(&self, name: &str) -> String {
        let name = format!("{name}{}", unique());
        let u = self.ok("POST", "/api/users", Some(serde_json::json!({"username": name, "email": format!("{name}@example.com")})));
        u["user_id"].as_str().unwrap().to_string()
    }

    pub fn deposit(&self, user: &str, asset: &str, amount: &str) {
        self.ok("POST", &format!("/api/users/{user}/deposits"), Some(serde_json::json!({"asset": asset, "amount": amount})));
    }

    pub fn symbol(&self, tick: &str, lot: &str) -> String {
        let sym = format!("T{}", unique().to_uppercase());
        self.ok("POST", "/api/symbols", Some(serde_json::json!({"symbol": sym, "tick": tick, "lot": lot})));
        sym
    }

    /// A new symbol (tick 0.01, lot 1), a buyer with `usd` USD and a seller with `units`
    /// of it: the symbol, the buyer, the seller.
    pub fn market_pair(&self, usd: &str, units: &str) -> (String, String, String) {
        let sym = self.symbol("0.01", "1");
        let (buyer, seller) = (self.user("buyer"), self.user("seller"));
        self.deposit(&buyer, "USD", usd);
        self.deposit(&seller, &sym, units);
        (sym, buyer, seller)
    }

    pub fn place(&self, user: &str, symbol: &str, side: &str, qty: &str, price: Option<&str>) -> (u16, Value) {
        let mut b = serde_json::json!({"user_id": user, "symbol": symbol, "side": side, "quantity": qty});
        match price {
            Some(p) => b["price"] = p.into(),
            None => b["type"] = "market".into(),
        }
        self.req("POST", "/api/orders", Some(b))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(dir) = std::env::var("AGT_TEST_KEEP") {
                let _ = std::process::Command::new("cp").arg("-r").arg(self.home.path()).arg(&dir).status();
            }
        }
        if let Some(c) = self.child.as_mut() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A short random suffix for names.
/// `agt --home HOME`, with none of the caller's `AGT_*` addresses or token, for a home
/// that is no [`Daemon`]'s (one with no daemon, a copy, a lock held by another process).
pub fn cli_at(home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(BIN);
    c.arg("--home").arg(home).env_remove("AGT_URL").env_remove("AGT_TOKEN").env_remove("AGT_SOCKET").env("NO_COLOR", "1");
    c
}

pub fn unique() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..8).map(|_| (b'a' + r.gen_range(0..26)) as char).collect()
}

/// The words the CLI's warning of an answer read behind the event bus begins with
/// (`agt::cli::BEHIND_WARNING`: the tests drive the binary, so they say it again).
pub const BEHIND_WARNING: &str = "warning: read behind the event bus:";

/// How long a test asks a read answered behind the event bus again ([`current`],
/// [`Daemon::cli_current`]).
const STALE_FOR: Duration = Duration::from_secs(120);

/// A read the daemon answered while what it reads was still behind the event bus after
/// its wait (`x-agt-behind`: a machine too loaded for the feeds) is asked again, as a
/// client that must see its own writes does, for up to `STALE_FOR`: the tests read their
/// own writes, and none of them is about a stale read (those use [`exchange_marked`]).
fn current(method: &str, path: &str, mut ask: impl FnMut() -> (u16, Option<u64>, Value)) -> (u16, Value) {
    let deadline = Instant::now() + STALE_FOR;
    loop {
        match ask() {
            (status, Some(behind), _) if method == "GET" && Instant::now() < deadline => {
                eprintln!("{method} {path} answered {status} {behind} events behind the bus: asking again");
            }
            (status, _, value) => return (status, value),
        }
    }
}

/// A minimal HTTP/1.1 exchange with `Connection: close`; the body parsed as JSON when it is.
pub fn exchange<S: Read + Write>(
    s: S,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Value)> {
    exchange_marked(s, method, path, body, headers).map(|(status, _, value)| (status, value))
}

/// [`exchange`], with the answer's `x-agt-behind` (how many events, at least, a read
/// answered behind the event bus may not show).
pub fn exchange_marked<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Option<u64>, Value)> {
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    // JSON unless the caller names another type (or `Content-Type` with no value: none).
    if !body.is_empty() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers.iter().filter(|(k, v)| !(k.eq_ignore_ascii_case("content-type") && v.is_empty())) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let payload = if chunked { dechunk(rest) } else { rest.to_string() };
    let behind = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-agt-behind")))
        .map(|(_, v)| v.trim().parse().unwrap());
    let value = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    Ok((status, behind, value))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

pub fn dec(v: &Value) -> rust_decimal::Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

/// Polls `f` until it gives something, for at most `within`: a readiness check for
/// what the daemon does in the background.
pub fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
