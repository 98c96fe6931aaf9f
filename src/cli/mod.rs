//! The `agt` command line: the clap command tree (DESIGN.md §5) and one handler file
//! per noun. Handlers turn arguments into requests on the daemon's API (§4) through
//! [`crate::client`] and print the answers as tables for people or JSON for scripts.
//!
//! **Exit codes** (a contract scripts rely on):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the daemon answered with an error (`error: <code>: <message>` on stderr), or a check failed (`audit verify`) |
//! | 2 | usage error: unknown command, missing or malformed argument |
//! | 3 | the daemon cannot be reached (the message says how to start it) |
//!
//! **Stale reads.** A command whose answer the daemon marked as read behind its event
//! bus (a loaded machine: `X-Agt-Behind`, see `client`) still exits 0, as the read
//! succeeded, and says so in one line on stderr after its output ([`behind_warning`]):
//! stdout stays only the data, `-o json` included; `-q` prints no warning, as it prints
//! no data.

pub mod audit;
pub mod bench;
pub mod book;
pub mod completions;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod health;
pub mod market;
pub mod metrics;
pub mod notify;
pub mod order;
pub mod output;
pub mod risk;
pub mod service;
pub mod symbol;
pub mod token;
pub mod trades;
pub mod user;

use crate::api::ApiError;
use crate::client::{BlockingClient, Client, ClientError, Endpoint, StaleAnswers};
use crate::daemon::Home;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::cell::OnceCell;
use std::path::PathBuf;
use std::process::ExitCode;

/// agt: a trading platform in a box. One daemon, one HTTP API, this CLI.
#[derive(Debug, Parser)]
#[command(name = "agt", version = crate::daemon::VERSION_AND_BUILD, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Start the daemon with `agt daemon start` (background) or `agt daemon run` (foreground).\n\
Exit codes: 0 ok, 1 the daemon answered an error, 2 usage error, 3 daemon unreachable.")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The daemon's home [default: $AGT_HOME, else $XDG_DATA_HOME/agt, else ~/.local/share/agt, ~ from $HOME or passwd]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Talk to the daemon on this socket [default: $AGT_HOME/agt.sock]
    #[arg(long, global = true, env = "AGT_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Talk to a daemon over TCP instead, e.g. http://127.0.0.1:8000 (needs --token)
    #[arg(long, global = true, env = "AGT_URL")]
    pub url: Option<String>,
    /// Bearer token for --url
    #[arg(long, global = true, env = "AGT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format: tables for people, JSON for scripts (NDJSON for streams)
    #[arg(short = 'o', long, global = true, env = "AGT_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Print nothing on success (errors still go to stderr)
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run, start, stop or inspect the daemon
    #[command(subcommand)]
    Daemon(daemon::DaemonCmd),
    /// The daemon's health and the state of every service
    Health,
    /// The supervised services: list, restart
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Users, their funds and accounts
    #[command(subcommand)]
    User(user::UserCmd),
    /// Place, inspect, amend and cancel orders
    #[command(subcommand)]
    Order(order::OrderCmd),
    /// The order book of a symbol
    Book(book::BookArgs),
    /// The trades tape of a symbol, newest first
    Trades(trades::TradesArgs),
    /// Quotes and candles
    #[command(subcommand)]
    Market(market::MarketCmd),
    /// Instruments: list, add
    #[command(subcommand)]
    Symbol(symbol::SymbolCmd),
    /// Risk limits and trading halts
    #[command(subcommand)]
    Risk(risk::RiskCmd),
    /// The event stream
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// The hash-chained audit log
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// The live configuration
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// API tokens for TCP clients
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Notification deliveries (webhooks)
    #[command(subcommand)]
    Notify(notify::NotifyCmd),
    /// A readable summary of the daemon's Prometheus metrics
    Metrics,
    /// Load the daemon with orders: orders/s, trades/s, latency percentiles, verification
    Bench(bench::BenchArgs),
    /// A live synthetic market (makers, takers, a random walk) for a first look
    Demo(demo::DemoArgs),
    /// The terminal dashboard: services, orders, book, accounts, events, audit
    Tui(crate::tui::Options),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
}

/// Why a command failed; each variant is one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A check the command makes itself failed (exit 1), e.g. an unknown config key.
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
    /// Arguments that clap accepted but that do not fit together (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No daemon runs where one is needed (exit 3).
    #[error("{0}")]
    NotRunning(String),
    /// The daemon runs, or something holds its home, but it cannot be reached: its
    /// socket is gone, it does not answer in time (exit 3). The message says what to do.
    #[error("{0}")]
    NotAnswering(String),
    /// Anything else: local I/O, a daemon that would not start (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A positional argument that names what a command acts on (a user, a symbol, an id),
/// checked before any request: empty or blank, it is a usage error (exit 2) naming the
/// argument as the usage line does (`USER`), and `what` it should be. The daemon could
/// only answer for a user named `" "` ("no user"), or for another route (`/api/book/`).
pub fn named<'a>(value: &'a str, arg: &str, what: &str) -> Result<&'a str, CliError> {
    if value.trim().is_empty() {
        return Err(CliError::Usage(format!("{arg} cannot be empty: give {what}")));
    }
    Ok(value)
}

/// [`named`] for a flag or an optional argument (`--user`, `--symbol`, `risk halt
/// [SYMBOL]`, and every other flag whose empty value could never be meant: `--client-id`,
/// `--name`, `--email`, `--tick`, `--price`, `--interval`, …): absent is `None`, given
/// but empty or blank is a usage error naming the flag. Sent empty, it would name no
/// user, read as no filter at all ("every user"), be dropped as if not given (an empty
/// `--client-id` placed an order that a retry would place again), or be refused by the
/// daemon in its own words rather than the flag's. A flag where empty means something
/// (`daemon start --http ""` turns TCP off) does not come here.
pub fn named_opt(value: Option<String>, arg: &str, what: &str) -> Result<Option<String>, CliError> {
    if let Some(v) = &value {
        named(v, arg, what)?;
    }
    Ok(value)
}

/// What a number option's text is, read one way for [`count_up_to`] and [`whole_in`]:
/// each then says in its own words what the option takes.
enum Digits<T> {
    /// A whole number that fits `T`.
    Whole(T),
    /// Digits only, but more than `T` holds: a number, only too large.
    TooLarge,
    /// Anything else: a sign, a point, letters, nothing.
    Not,
}

/// The unsigned integer types a number option is read into, and the most each holds.
pub trait Whole: std::str::FromStr + Copy + Ord + std::fmt::Display + Send + Sync + 'static {
    const MOST: Self;
}

impl Whole for u8 {
    const MOST: u8 = u8::MAX;
}
impl Whole for u32 {
    const MOST: u32 = u32::MAX;
}
impl Whole for u64 {
    const MOST: u64 = u64::MAX;
}
impl Whole for usize {
    const MOST: usize = usize::MAX;
}

/// The text (trimmed) as a whole number of type `T`, too large for it, or not one.
fn digits<T: Whole>(t: &str) -> Digits<T> {
    match t.parse::<T>() {
        Ok(n) => Digits::Whole(n),
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Digits::TooLarge,
        Err(_) => Digits::Not,
    }
}

/// The value parser of a count the daemon checks (`--limit`, `--depth`): a whole number
/// from 1 that fits a `u32` goes to the daemon as typed, even past `max`, so that it is
/// refused (or, for `--depth`, capped) in the daemon's words like any other request's:
/// the most a list gives is the daemon's to say. 0 is refused here (exit 2) as `-1` is,
/// naming the range: no daemon takes a count of nothing, and it answered 400
/// `invalid_limit` (exit 1) where every other bad value of an option is a usage error.
/// Digits past `u32`'s range are refused here as too large, with the largest the daemon
/// takes: clap's own message, "99999999999 is not in 0..=4294967295", named a range the
/// daemon does not take at either end (the daemon says so too: `http::query_number`).
pub fn count_up_to(max: u32) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |raw: &str| {
        let t = raw.trim();
        match digits::<u32>(t) {
            Digits::Whole(0) => Err(format!("{} is too small: 1 is the fewest it gives, {max} the most", crate::api::quote::bare(t))),
            Digits::Whole(n) => Ok(n),
            Digits::TooLarge => Err(format!("{} is too large: {max} is the most it gives", crate::api::quote::bare(t))),
            Digits::Not => Err(format!("{} is not a whole number of 1 or more", crate::api::quote::quoted(t))),
        }
    }
}

/// The value parser of a whole number the CLI itself bounds (`--since`, and `agt bench`'s
/// counts), read into the type its option has (`--cancels` a `u8`, `--concurrency` a
/// `usize`): clap's own parsers said "invalid digit found in string" of `-1` or `ten`,
/// which names neither what was wrong nor what to give. `what` is what the number counts
/// ("a sequence number"); the message names the range taken, `lo` to `hi` (`None`: no end
/// but `T`'s, said as "or more").
pub fn whole_in<T: Whole>(what: &'static str, lo: T, hi: Option<T>) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |raw: &str| {
        let t = raw.trim();
        let range = || match hi {
            Some(hi) => format!("from {lo} to {hi}"),
            None => format!("of {lo} or more"),
        };
        let most = hi.unwrap_or(T::MOST);
        match digits::<T>(t) {
            Digits::Whole(n) if n < lo => Err(format!("{what} is a whole number {}; got {n}", range())),
            Digits::Whole(n) if n <= most => Ok(n),
            Digits::Not => Err(format!("{what} is a whole number {}; got {}", range(), crate::api::quote::quoted(t))),
            Digits::Whole(_) | Digits::TooLarge => Err(format!("{} is too large: {most} is the most it takes", crate::api::quote::bare(t))),
        }
    }
}

/// What [`named`] asks for a user and a symbol, alike in every command.
pub const A_USER: &str = "a username or user id (`agt user list` shows them)";
pub const A_SYMBOL: &str = "a symbol (`agt symbol list` shows them)";

impl CliError {
    pub fn failed(code: &str, message: impl Into<String>) -> CliError {
        CliError::Failed { code: code.to_string(), message: message.into() }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Unreachable { .. }) | CliError::NotRunning(_) | CliError::NotAnswering(_) => 3,
            CliError::Client(ClientError::BadUrl { .. } | ClientError::BadToken(_)) | CliError::Usage(_) => 2,
            CliError::Client(_) | CliError::Failed { .. } | CliError::Other(_) => 1,
        }
    }
}

pub type CliResult = Result<(), CliError>;

/// What every handler gets: where the daemon is, how to print, and a client made on
/// first use (so `daemon run` and `completions` never build one).
pub struct Ctx {
    pub global: Global,
    pub home: Home,
    client: OnceCell<BlockingClient>,
}

impl Ctx {
    /// Fails when no home can be found (no `--home`, `AGT_HOME`, `HOME`, `XDG_DATA_HOME`
    /// nor passwd entry): a usage error asking for `--home`.
    pub fn new(global: Global) -> Result<Ctx, CliError> {
        let home = Home::resolve(global.home.as_deref()).map_err(CliError::Usage)?;
        Ok(Ctx { global, home, client: OnceCell::new() })
    }

    pub fn json(&self) -> bool {
        self.global.output == Format::Json
    }

    pub fn quiet(&self) -> bool {
        self.global.quiet
    }

    /// The daemon this invocation talks to: `--url`/`AGT_URL` (TCP) if given, else
    /// `--socket`/`AGT_SOCKET`, else the home's `agt.sock` (never a socket `agtd.json`
    /// names: `Endpoint::for_home`).
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        if let Some(url) = self.global.url.as_deref().filter(|u| !u.is_empty()) {
            return Endpoint::tcp(url, self.global.token.clone());
        }
        if let Some(sock) = self.global.socket.as_ref().filter(|s| !s.as_os_str().is_empty()) {
            return Ok(Endpoint::Unix(sock.clone()));
        }
        Ok(Endpoint::for_home(&self.home))
    }

    pub fn client(&self) -> Result<&BlockingClient, CliError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = BlockingClient::new(Client::new(self.endpoint()?)).map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}"))?;
        Ok(self.client.get_or_init(|| c))
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.client()?.get(path)?)
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.client()?.post(path, Some(body))?)
    }
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.client()?.put(path, Some(body))?)
    }
    /// A PUT of a body already written as JSON text: see [`json_text`].
    pub fn put_text(&self, path: &str, body: String) -> Result<Value, CliError> {
        Ok(self.client()?.put_text(path, body)?)
    }
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.client()?.patch(path, Some(body))?)
    }
    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.client()?.delete(path, None)?)
    }

    /// Prints an answer: exactly the JSON with `-o json`, else what `table` makes of it;
    /// nothing with `-q`.
    pub fn show(&self, v: &Value, table: impl FnOnce(&Value) -> String) -> CliResult {
        if self.quiet() {
            return Ok(());
        }
        if self.json() {
            println!("{}", serde_json::to_string_pretty(v).expect("a JSON value serializes"));
        } else {
            let text = table(v);
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Ok(())
    }

    /// Gets a list the daemon cuts at a `limit` (`cut.default` when `limit` is `None`),
    /// asking for one more than it shows: when more exist, the extra is dropped and
    /// [`Ctx::show_list`] says so on stderr. A list cut silently at the default 100 was
    /// taken for the whole one by people and scripts alike.
    pub fn get_list(&self, path: &str, query: &[(&str, Option<String>)], limit: Option<u32>, cut: Cut) -> Result<Listed, CliError> {
        let shown = limit.unwrap_or(cut.default);
        // A limit the daemon refuses (0, past its maximum) goes as given, for its message.
        let ask = if (1..cut.max).contains(&shown) { shown + 1 } else { shown };
        let mut pairs = query.to_vec();
        pairs.push(("limit", Some(ask.to_string())));
        let mut value = self.get(&crate::client::with_query(path, &pairs))?;
        let mut notice = None;
        if let Value::Array(items) = &mut value {
            let n = shown as usize;
            if items.len() > n {
                if cut.keep_front {
                    items.truncate(n);
                } else {
                    items.drain(..items.len() - n);
                }
                notice = Some(format!("showing the {} {shown} {}; pass --limit N for more (at most {})", cut.which, cut.noun, cut.max));
            } else if n > 0 && items.len() == n && shown == cut.max {
                notice = Some(format!("showing the {} {shown} {}, the most one request gives; there may be more", cut.which, cut.noun));
            }
        }
        Ok(Listed { value, notice })
    }

    /// Prints a list from [`Ctx::get_list`] as [`Ctx::show`] does, then its notice, if
    /// it was cut, on stderr: stdout stays only the data.
    pub fn show_list(&self, listed: &Listed, table: impl FnOnce(&Value) -> String) -> CliResult {
        self.show(&listed.value, table)?;
        if let (Some(notice), false) = (&listed.notice, self.quiet()) {
            eprintln!("note: {notice}");
        }
        Ok(())
    }

    /// One record of a stream: a compact JSON line with `-o json`, else `line`.
    pub fn stream_item(&self, v: &Value, line: impl FnOnce(&Value) -> String) {
        if self.quiet() {
            return;
        }
        if self.json() {
            println!("{}", serde_json::to_string(v).expect("a JSON value serializes"));
        } else {
            println!("{}", line(v));
        }
    }

    /// A line for people (never printed with `-q`).
    pub fn say(&self, text: &str) {
        if !self.quiet() {
            println!("{text}");
        }
    }
}

/// How the daemon cuts one kind of list (README.md: "A list's `limit`").
pub struct Cut {
    /// What the list holds, for the notice ("orders", "records after 7").
    pub noun: String,
    /// Which part of the whole the list shows ("newest", "first").
    pub which: &'static str,
    /// The daemon's default and largest `limit` for it.
    pub default: u32,
    pub max: u32,
    /// Whether the items to show come first (a list newest first): the extra one asked
    /// for is then the last, else the first (candles are the newest N, oldest first).
    pub keep_front: bool,
}

/// A list as [`Ctx::get_list`] got it: the items to show, and what to say if there are more.
pub struct Listed {
    pub value: Value,
    pub notice: Option<String>,
}

/// Parses, dispatches and maps the outcome to an exit code; what `main` calls.
pub fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => usage_error(e),
    }
}

/// clap's refusal of a command line, as clap prints it (exit 2), with each long value the
/// user gave quoted by its ends and length ([`crate::api::quote::quoted`]). clap quotes
/// a value it refuses whole (`invalid value '<5,000 digits>' for '--limit <N>'`), and
/// cannot be told not to; our value parsers' own words, which it appends, are short
/// already. The values are the arguments (and an `--opt=VALUE`'s value) and `AGT_*`
/// variables, which clap reads for some options.
fn usage_error(e: clap::Error) -> ExitCode {
    let given: Vec<String> = std::env::args_os()
        .skip(1)
        .chain(std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("AGT_")).map(|(_, v)| v))
        .map(|a| a.to_string_lossy().into_owned())
        .flat_map(|a| {
            let value = a.split_once('=').map(|(_, v)| v.to_string());
            [Some(a), value]
        })
        .flatten()
        .collect();
    if !given.iter().any(|a| crate::api::quote::is_long(a)) || !e.use_stderr() {
        e.exit()
    }
    eprint!("{}", crate::api::quote::quote_given(&e.render().to_string(), given));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Daemon(daemon::DaemonCmd::Run { .. })) {
        // A CLI whose output is piped into `head` should end quietly, like other Unix
        // tools; `daemon status | head -1` and `daemon start|stop` too (they print like any
        // command). Not the daemon itself, which must survive peers closing sockets.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Completions(a) = cli.command {
        // Needs no home (nor daemon).
        return match completions::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let ctx = match Ctx::new(cli.global) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let code = match dispatch(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&ctx, &e);
            ExitCode::from(e.exit_code())
        }
    };
    warn_if_behind(&ctx);
    code
}

/// After a command's output: one line on stderr when any answer it showed was read
/// behind the daemon's event bus, so that data a loaded machine had not caught up with
/// does not pass for current. The exit code stays as it was (the read succeeded).
fn warn_if_behind(ctx: &Ctx) {
    let Some(client) = ctx.client.get() else { return };
    let stale = client.client().staleness().take();
    if ctx.quiet() {
        return;
    }
    if let Some(line) = behind_warning(&stale) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// The words that begin [`behind_warning`]'s line, for scripts and tests that look for it.
pub const BEHIND_WARNING: &str = "warning: read behind the event bus:";

/// The warning for answers read behind the daemon's event bus: which requests, how many
/// events each may lack at least, why, and that running the command again shows them.
/// `None` when every answer was current.
pub fn behind_warning(stale: &StaleAnswers) -> Option<String> {
    let events = |n: u64| if n == 1 { "at least 1 event".to_string() } else { format!("at least {n} events") };
    let what = match (stale.kept.as_slice(), stale.more) {
        ([], 0) => return None,
        ([one], 0) => format!("{} may lack {} published before it", one.request, events(one.events)),
        (kept, more) => {
            let mut each: Vec<String> = kept.iter().map(|b| format!("{} ({})", b.request, events(b.events))).collect();
            if more > 0 {
                each.push(format!("{more} more"));
            }
            format!("{} answers may lack events published before them: {}", kept.len() as u64 + more, each.join(", "))
        }
    };
    Some(format!(
        "{BEHIND_WARNING} {what}; the daemon had not caught up with its events when its wait ran out (a loaded machine); run the command again to see them"
    ))
}

fn dispatch(ctx: &Ctx, command: Command) -> CliResult {
    match command {
        Command::Daemon(c) => daemon::run(ctx, c),
        Command::Health => health::run(ctx),
        Command::Service(c) => service::run(ctx, c),
        Command::User(c) => user::run(ctx, c),
        Command::Order(c) => order::run(ctx, c),
        Command::Book(a) => book::run(ctx, a),
        Command::Trades(a) => trades::run(ctx, a),
        Command::Market(c) => market::run(ctx, c),
        Command::Symbol(c) => symbol::run(ctx, c),
        Command::Risk(c) => risk::run(ctx, c),
        Command::Events(c) => events::run(ctx, c),
        Command::Audit(c) => audit::run(ctx, c),
        Command::Config(c) => config::run(ctx, c),
        Command::Token(c) => token::run(ctx, c),
        Command::Notify(c) => notify::run(ctx, c),
        Command::Metrics => metrics::run(ctx),
        Command::Bench(a) => bench::run(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
        Command::Completions(a) => completions::run(a),
        Command::Tui(o) => tui(ctx, o),
    }
}

/// `agt tui`: the daemon must answer once before the terminal is taken over, so that a
/// daemon that is not running (exit 3), a bad token (401) or a disabled user's token (403
/// `user_disabled`) get the usual message; after that the dashboard rides out restarts by
/// itself. A token that may not read the event stream (403 `forbidden`: a trader's) is
/// let in: its dashboard polls what it may read.
fn tui(ctx: &Ctx, opts: crate::tui::Options) -> CliResult {
    match ctx.client()?.get("/api/events?limit=0") {
        Err(ClientError::Api(e)) if e.status == 403 && e.code == "forbidden" => {}
        other => {
            other?;
        }
    }
    // The probe shows nothing: a mark on it is no warning after the dashboard.
    ctx.client()?.client().staleness().take();
    crate::tui::run(Client::new(ctx.endpoint()?), opts).map_err(CliError::Other)
}

/// Writes the failure to stderr, with a hint where one helps.
fn report(ctx: &Ctx, e: &CliError) {
    match e {
        CliError::Client(ClientError::Api(ApiError { status, code, message, order_id })) => {
            eprintln!("error: {code}: {message}");
            if let Some(id) = order_id {
                eprintln!("order {id} is stored as rejected (agt order get {id})");
            }
            if *status == 401 {
                eprintln!("hint: pass a token with --token or AGT_TOKEN (`agt token create` makes one)");
            }
        }
        CliError::Client(ClientError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            let endpoint = ctx.endpoint();
            // The home's daemon may run, its socket gone or refusing: a start would then
            // be refused as already running.
            let own_pid = match &endpoint {
                Ok(ep) if *ep == Endpoint::for_home(&ctx.home) => match daemon::running_daemon(&ctx.home) {
                    Ok(daemon::Running::Daemon(pid)) => Some(pid),
                    _ => None,
                },
                _ => None,
            };
            let stopping = own_pid.and_then(|pid| daemon::stopping_since(&ctx.home, pid));
            match (endpoint, own_pid) {
                (Ok(Endpoint::Tcp { .. }), _) => eprintln!(
                    "hint: is the agt daemon running there? Check --url/AGT_URL; on that machine start it with `agt daemon start`"
                ),
                (_, Some(pid)) if stopping.is_some() => {
                    eprintln!("hint: {}", daemon::stopping_message(pid, stopping.as_deref().unwrap_or_default()))
                }
                (_, Some(pid)) => eprintln!(
                    "hint: the daemon runs (pid {pid}) but cannot be reached on its socket; restart it: `agt daemon stop`, then \
                     `agt daemon start`{}",
                    home_hint(ctx)
                ),
                _ => eprintln!(
                    "hint: start the daemon with `agt daemon start` (background) or `agt daemon run` (foreground){}",
                    home_hint(ctx)
                ),
            }
        }
        CliError::Client(ClientError::BadUrl { .. } | ClientError::BadToken(_)) | CliError::Usage(_) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
        }
        CliError::NotRunning(msg) => {
            eprintln!("{msg}");
            eprintln!("hint: start it with `agt daemon start` (background) or `agt daemon run` (foreground){}", home_hint(ctx));
        }
        // Not `eprintln!`, which panics (exit 101) where stderr cannot be written: a
        // detached daemon's stderr is `logs/daemon.out`, on the disk that may be full.
        CliError::Other(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
        }
        other => eprintln!("error: {other}"),
    }
}

fn home_hint(ctx: &Ctx) -> String {
    if ctx.global.home.is_some() {
        format!(", with the same --home {}", ctx.home.root().display())
    } else {
        String::new()
    }
}

/// A command-line value as JSON text: a number, bool, array or object as typed when it
/// parses as one, else the string itself (`3` → `3`, `true` → `true`, `100.0` → `100.0`,
/// `abc` → `"abc"`). A number goes as its digits, neither through a float
/// (`12345678.123456789012` read into a `serde_json::Value` is `12345678.12345679`) nor as
/// a string: the daemon reads it as the number it is and, refusing it, shows it as typed,
/// as it does for a JSON number sent over HTTP.
pub fn json_text(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_)) => raw.trim().to_string(),
        _ => Value::String(raw.to_string()).to_string(),
    }
}

/// A body of one key and a value's JSON text (from [`json_text`]).
pub fn one_key_body(key: &str, value_text: &str) -> String {
    format!("{{{}: {value_text}}}", Value::String(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Calls `f` with every command under `agt` and its path (`agt order place`), clap's
    /// own `help` subcommand left out.
    fn each_command(f: &mut dyn FnMut(&clap::Command, &str)) {
        fn walk(cmd: &clap::Command, path: &str, f: &mut dyn FnMut(&clap::Command, &str)) {
            f(cmd, path);
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), f);
            }
        }
        walk(&Cli::command(), "agt", f);
    }

    /// A subcommand's argument with the id of a global option (`url`, `token`, `home`,
    /// …) takes that option's place without a word from clap: a webhook's URL positional
    /// once made `agt notify rules add` dial the daemon at the webhook's address.
    #[test]
    fn no_argument_reuses_a_global_options_id() {
        let root = Cli::command();
        let globals: Vec<String> = root.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().as_str().to_string()).collect();
        assert!(globals.iter().any(|g| g == "url"), "the walk sees the global options: {globals:?}");
        let mut clashes = Vec::new();
        each_command(&mut |cmd, path| {
            if path == "agt" {
                return;
            }
            for arg in cmd.get_arguments().filter(|a| !a.is_global_set()) {
                let id = arg.get_id().as_str();
                if globals.iter().any(|g| g == id) {
                    clashes.push(format!("{path} {id}"));
                }
            }
        });
        assert!(clashes.is_empty(), "arguments that take a global option's id: {clashes:?}");
    }

    /// `--help` is the manual a user has at hand: an argument listed without a word
    /// (`<ID>`, `--qty <QTY>`) leaves them guessing, as `order amend --qty` did about
    /// whether it is the new total or an increment.
    #[test]
    fn every_argument_says_what_it_is() {
        let mut bare = Vec::new();
        each_command(&mut |cmd, path| {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version") && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    bare.push(format!("{path} {id}"));
                }
            }
        });
        assert!(bare.is_empty(), "arguments without a description in --help: {bare:?}");
    }

    /// Text after a command's options keeps its own line breaks, and clap wraps a line
    /// longer than its 100 columns again: a sentence broken by hand past that width
    /// leaves a stub line behind (`agt tui --help` showed "session," alone on a line).
    /// A long line must be a whole sentence or paragraph, which clap wraps cleanly.
    #[test]
    fn hand_wrapped_help_breaks_only_where_clap_would_not_rewrap() {
        let mut long = Vec::new();
        each_command(&mut |cmd, path| {
            for text in [cmd.get_after_help(), cmd.get_before_help()].into_iter().flatten() {
                let text = text.to_string();
                let cut = text.lines().filter(|l| l.chars().count() > 100 && !l.trim_end().ends_with(['.', ':', '!', '?']));
                long.extend(cut.map(|line| format!("{path}: {line}")));
            }
        });
        assert!(long.is_empty(), "help lines broken mid-sentence past clap's width: {long:#?}");
    }

    /// A number option is read into its own type, so its bounds are the parser's and the
    /// type's alike: `bench --cancels` is a `u8` of 0 to 100, with no narrowing after.
    #[test]
    fn a_whole_number_is_read_into_its_options_type() {
        let cancels = whole_in::<u8>("--cancels", 0, Some(100));
        assert_eq!(cancels(" 100 "), Ok(100u8));
        assert_eq!(cancels("101").unwrap_err(), "101 is too large: 100 is the most it takes");
        assert_eq!(cancels("256").unwrap_err(), "256 is too large: 100 is the most it takes");
        assert_eq!(cancels("-1").unwrap_err(), r#"--cancels is a whole number from 0 to 100; got "-1""#);
        let any = whole_in::<u8>("a byte", 1, None);
        assert_eq!(any("256").unwrap_err(), "256 is too large: 255 is the most it takes");
        assert_eq!(any("0").unwrap_err(), "a byte is a whole number of 1 or more; got 0");
        assert_eq!(whole_in::<usize>("--concurrency", 1, Some(4096))("4096"), Ok(4096usize));
        // The count the daemon bounds reads digits the same way.
        let limit = count_up_to(10_000);
        assert_eq!(limit("20000"), Ok(20_000));
        assert_eq!(limit(" 0 ").unwrap_err(), "0 is too small: 1 is the fewest it gives, 10000 the most");
        assert_eq!(limit("4294967296").unwrap_err(), "4294967296 is too large: 10000 is the most it gives");
        assert_eq!(limit("1.5").unwrap_err(), r#""1.5" is not a whole number of 1 or more"#);
    }

    /// One line, naming each request read behind with its count, why, and what to do;
    /// nothing when every answer was current.
    #[test]
    fn a_warning_for_answers_read_behind() {
        use crate::client::Behind;
        let b = |request: &str, events| Behind { request: request.into(), events };
        assert_eq!(behind_warning(&StaleAnswers::default()), None);
        let one = behind_warning(&StaleAnswers { kept: vec![b("GET /api/audit", 3)], more: 0 }).unwrap();
        assert_eq!(
            one,
            "warning: read behind the event bus: GET /api/audit may lack at least 3 events published before it; the daemon had \
             not caught up with its events when its wait ran out (a loaded machine); run the command again to see them"
        );
        let two = behind_warning(&StaleAnswers { kept: vec![b("GET /api/trades/X", 1), b("GET /api/market/X", 2)], more: 5 }).unwrap();
        assert!(two.starts_with(BEHIND_WARNING), "{two}");
        assert!(
            two.contains("7 answers may lack events published before them: GET /api/trades/X (at least 1 event), GET /api/market/X (at least 2 events), 5 more;"),
            "{two}"
        );
        assert!(!two.contains('\n'), "one line: {two}");
    }

    #[test]
    fn values_from_the_command_line() {
        assert_eq!(json_text("3"), "3");
        assert_eq!(json_text("true"), "true");
        assert_eq!(json_text(" 100.0 "), "100.0", "a number as typed, neither through a float nor quoted");
        assert_eq!(json_text("1e2"), "1e2");
        assert_eq!(json_text("info"), r#""info""#);
        assert_eq!(json_text("\"x\""), r#""\"x\"""#);
        assert_eq!(json_text("007"), r#""007""#);
        assert_eq!(json_text("12345678.123456789012"), "12345678.123456789012");
        assert_eq!(json_text(r#"{"tick": 0.30000000000000001}"#), r#"{"tick": 0.30000000000000001}"#);
        assert_eq!(one_key_body("risk.max_open_orders", &json_text("1e2")), r#"{"risk.max_open_orders": 1e2}"#);
    }
}
