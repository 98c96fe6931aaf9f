//! The dashboard's state and its one pure transition, [`App::update`].
//!
//! `update` takes an [`Action`] and answers the [`Effect`]s it wants performed; it never
//! does I/O, never reads a clock and never sleeps, so a test can drive it with key
//! sequences and canned daemon answers and check both the state and the requests.
//!
//! **Snapshots follow events.** Every event marks the snapshots it changes as stale
//! (`ORDER_*` → the orders table and that symbol's book, `TRADE_EXECUTED` → that book and
//! tape, `ACCOUNT_*` → that account, …). A stale snapshot is fetched only if a visible
//! view shows it, at most one request per snapshot at a time, and only when the event
//! loop says the debounce window has passed ([`Action::Flush`]). A burst of a thousand
//! orders therefore costs a few fetches, and a hidden tab costs none.
//!
//! **A session without the whole event stream** is polled: a trader's, whose stream
//! holds only its own user's events ([`Feed::Own`]: they fill its Events tab, but the
//! market's trades never come), or a token the daemon refuses the stream
//! ([`Feed::Polled`]). What the current tab shows is fetched again every second. What
//! the role may not read at all is never asked for ([`App::unavailable`]): a trader's
//! Services and Audit panels say so instead of failing, and any other read the daemon
//! refuses as `forbidden` joins them.

use super::action::{short_id, Action, Command, Effect, Failure, Fetch, MarketData, Net, OrdersScope, Snapshot};
use super::form::{Form, Known, Outcome};
use super::rates::Rates;
use crate::api::{Account, AuditRecord, AuditVerify, Event, Health, Instrument, Order, Role, ServiceInfo, User};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many events the Events tab keeps (newest first).
pub const EVENT_HISTORY: usize = 1000;
/// How long a message in the status line stays, in ticks (seconds).
const FLASH_TICKS: u64 = 6;
/// Rows PageUp/PageDown move in an overlay (the help, a row's detail), and in a list until
/// it is first drawn ([`App::list_rows`]).
const PAGE: usize = 10;

/// Where a scrolling overlay's offset goes for a key (j/k, arrows, pages, g/G, Home/End),
/// at most `last`; any other key leaves it.
fn scrolled(code: KeyCode, scroll: usize, last: usize) -> usize {
    // From where the pop-up shows, should what it shows have shrunk (a row refreshed
    // shorter) since the last key: else the first k took back an offset nothing showed.
    let scroll = scroll.min(last);
    let to = match code {
        KeyCode::Char('j') | KeyCode::Down => scroll + 1,
        KeyCode::Char('k') | KeyCode::Up => scroll.saturating_sub(1),
        KeyCode::PageDown => scroll + PAGE,
        KeyCode::PageUp => scroll.saturating_sub(PAGE),
        KeyCode::Char('g') | KeyCode::Home => 0,
        KeyCode::Char('G') | KeyCode::End => last,
        _ => scroll,
    };
    to.min(last)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Orders,
    Book,
    Accounts,
    Events,
    Audit,
}

impl Tab {
    pub const ALL: [Tab; 6] = [Tab::Overview, Tab::Orders, Tab::Book, Tab::Accounts, Tab::Events, Tab::Audit];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Orders => "Orders",
            Tab::Book => "Book",
            Tab::Accounts => "Accounts",
            Tab::Events => "Events",
            Tab::Audit => "Audit",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// The state of the event stream, which is also the state of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// The first attempt has not finished yet.
    Connecting,
    Live,
    /// The stream broke (why); the net task retries with backoff.
    Reconnecting(String),
    /// The daemon refused the token for good (why): nothing more will come.
    Refused(String),
}

/// How the dashboard learns that its snapshots changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// The event stream (admin and viewer tokens): an event makes its snapshots stale.
    Events,
    /// The stream of the token's own user's events (a trader's): they show in the Events
    /// tab and make its orders and account stale, but nothing says the market moved, so
    /// what the current tab shows is also fetched again every second.
    Own,
    /// No event stream: the daemon refused it to this token (why, in its words), so what
    /// the current tab shows is fetched again every second and Events has nothing.
    Polled(String),
}

/// What sits on top of the current tab and takes the keys first.
#[derive(Debug, Clone)]
pub enum Overlay {
    None,
    /// The keys, scrolled down by `scroll` rows where the terminal is too short for them.
    Help {
        scroll: usize,
    },
    /// Typing a filter for the current tab; `before` is restored by Esc.
    Filter {
        before: String,
    },
    Form(Form),
    /// A question to answer with y or n before a command is sent.
    Confirm {
        question: String,
        command: Command,
    },
    /// Enter on a row: the whole of it, scrolled down by `scroll` rows.
    Detail {
        of: Detail,
        scroll: usize,
    },
}

/// The row a detail pop-up shows, by its identity rather than its place in the list: a
/// refresh underneath shows the row's newest state (an order filling) and never another
/// row that has taken its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Order(String),
    Event(u64),
    Audit(u64),
}

/// A message in the status line for a few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    /// The tick after which it disappears.
    until: u64,
}

/// How the dashboard starts.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where the daemon is, as shown in the status line.
    pub endpoint: String,
    /// `--read-only`: never send a command, whatever the token may do.
    pub read_only: bool,
    /// `--symbol`: the Book tab's first symbol.
    pub symbol: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct OrdersTab {
    /// Newest first, as the daemon lists them.
    pub rows: Vec<Order>,
    /// Index into the filtered rows.
    pub selected: usize,
    pub filter: String,
    /// An order just placed: selected once the table shows it.
    pub select_next: Option<String>,
    /// What the rows were last asked for (see [`OrdersScope`]).
    pub scope: OrdersScope,
}

#[derive(Debug, Clone, Default)]
pub struct BookTab {
    pub symbol: Option<String>,
    /// The last market data fetched; shown only while it is for `symbol`.
    pub data: Option<MarketData>,
}

#[derive(Debug, Clone, Default)]
pub struct AccountsTab {
    /// Index into `App::users`.
    pub selected: usize,
    /// The selected user's account, once fetched.
    pub account: Option<Account>,
}

#[derive(Debug, Clone, Default)]
pub struct EventsTab {
    /// Newest first.
    pub items: VecDeque<Event>,
    /// The newest of those arrived while paused, shown on resume. At most
    /// [`EVENT_HISTORY`]: the tab keeps no more than that, so the oldest held make way
    /// for the newest, and a resume after a long pause under load shows the newest
    /// events rather than those of the moment it paused with a silent gap above them.
    pub held: VecDeque<Event>,
    /// How many arrived while paused, held or since made way: the title's count.
    pub held_count: u64,
    pub paused: bool,
    /// Event types to show: words matched against the type, any of them.
    pub filter: String,
    /// Index into the filtered items; 0 follows the newest.
    pub selected: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AuditTab {
    /// Oldest first, as the daemon lists them; shown newest first.
    pub records: Vec<AuditRecord>,
    pub verify: Option<AuditVerify>,
    pub selected: usize,
}

/// Everything the dashboard shows and remembers.
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Settings,
    pub tab: Tab,
    pub overlay: Overlay,
    pub conn: Conn,
    pub feed: Feed,
    pub role: Option<Role>,
    pub quit: bool,
    /// Something visible changed since the last frame.
    pub dirty: bool,
    /// The terminal's size ([`Action::Resize`]); 80x24, the smallest supported, until
    /// the event loop says.
    pub screen: ratatui::layout::Rect,
    /// The rows the tab's list showed when last drawn: what PgUp and PgDn move by. Set by
    /// the view ([`views::list_window`](crate::tui::views::list_window)), which alone
    /// knows how much of the screen the list gets (a flash, the audit verdict and the
    /// width all take rows); a fixed page skipped unseen rows on a short terminal.
    pub list_rows: std::cell::Cell<usize>,
    /// Seconds since start, counted in ticks: the state's only notion of time.
    pub clock: u64,
    pub flash: Option<Flash>,
    /// The sequence number of the newest event seen.
    pub last_seq: u64,
    /// The newest event when the stream (re)connected; older ones are replayed history.
    replayed_to: u64,
    /// `clock` when the stream broke, while the daemon is away: what the Overview shows
    /// is as of then, so uptimes stop counting and the panels say so rather than show a
    /// dead daemon's services as running.
    away_since: Option<u64>,
    /// How many tries to reconnect have failed since the stream broke: the Events tab
    /// says how long it has been reconnecting and how often it tried, not "following".
    failed_tries: u32,

    pub health: Option<Health>,
    /// `clock` when `health` arrived, to keep its uptime counting between fetches.
    health_at: u64,
    pub services: Vec<ServiceInfo>,
    services_at: u64,
    pub rates: Rates,
    pub users: Vec<User>,
    pub symbols: Vec<Instrument>,
    pub orders: OrdersTab,
    pub book: BookTab,
    pub accounts: AccountsTab,
    pub events: EventsTab,
    pub audit: AuditTab,
    /// Why a snapshot could not be fetched, shown where it would be.
    pub errors: BTreeMap<Fetch, String>,
    /// Snapshots whose last fetch the daemon answered behind its event bus, with how
    /// many events, at least, each may lack: the status line says so while one shown is,
    /// so that a tape or audit log a loaded machine has not caught up with does not pass
    /// for current. The next current answer clears it.
    behind: BTreeMap<Fetch, u64>,
    /// Snapshots this token may not read, and why: never asked for (again) until the
    /// role is probed anew. Seeded from the role, and joined by any read the daemon
    /// refuses as `forbidden`.
    denied: BTreeMap<Fetch, String>,

    /// Snapshots an event (or a connect) has made out of date.
    stale: BTreeSet<Fetch>,
    /// Snapshots requested and not answered yet.
    inflight: BTreeSet<Fetch>,
    /// Snapshots answered since the stream (re)connected.
    answered: BTreeSet<Fetch>,
    /// The user of the last order form, to prefill the next one.
    last_user: String,
}

/// How often (in ticks) the Overview refetches the services while it is shown, and a
/// polled session the health.
const SERVICES_POLL_TICKS: u64 = 3;
/// How often (in ticks) a polled session refetches the instruments.
const SYMBOLS_POLL_TICKS: u64 = 10;

/// What a role may not read (DESIGN.md §4: a trader reads its own user's account, orders
/// and fills, and market data), so its dashboard does not ask: `(snapshot, why)`.
fn denied_to(role: Role) -> &'static [(Fetch, &'static str)] {
    const READERS: &str = "only admin and viewer tokens read it";
    match role {
        Role::Trader => &[(Fetch::Services, READERS), (Fetch::Audit, READERS), (Fetch::AuditVerify, READERS)],
        Role::Admin | Role::Viewer => &[],
    }
}

impl App {
    pub fn new(settings: Settings) -> App {
        let symbol = settings.symbol.clone().map(|s| s.to_uppercase());
        App {
            settings,
            tab: Tab::Overview,
            overlay: Overlay::None,
            conn: Conn::Connecting,
            feed: Feed::Events,
            role: None,
            quit: false,
            dirty: true,
            screen: ratatui::layout::Rect::new(0, 0, 80, 24),
            list_rows: std::cell::Cell::new(PAGE),
            clock: 0,
            flash: None,
            last_seq: 0,
            replayed_to: 0,
            away_since: None,
            failed_tries: 0,
            health: None,
            health_at: 0,
            services: Vec::new(),
            services_at: 0,
            rates: Rates::default(),
            users: Vec::new(),
            symbols: Vec::new(),
            orders: OrdersTab::default(),
            book: BookTab { symbol, data: None },
            accounts: AccountsTab::default(),
            events: EventsTab::default(),
            audit: AuditTab::default(),
            errors: BTreeMap::new(),
            behind: BTreeMap::new(),
            denied: BTreeMap::new(),
            stale: BTreeSet::new(),
            inflight: BTreeSet::new(),
            answered: BTreeSet::new(),
            last_user: String::new(),
        }
    }

    /// True when no command may be sent: `--read-only`, or a viewer's token.
    pub fn read_only(&self) -> bool {
        self.settings.read_only || self.role == Some(Role::Viewer)
    }

    /// True when deposits and withdrawals may be sent: they are an admin's (an unknown
    /// role is let try; the daemon has the last word).
    pub fn may_transfer(&self) -> bool {
        !self.read_only() && self.role != Some(Role::Trader)
    }

    /// True when snapshots are polled rather than (only) made stale by events.
    pub fn polled(&self) -> bool {
        matches!(self.feed, Feed::Own | Feed::Polled(_))
    }

    /// Why this token may not read a snapshot, if it may not.
    pub fn unavailable(&self, key: &Fetch) -> Option<&str> {
        self.denied.get(key).map(String::as_str)
    }

    /// Who may not read something, for messages: "a trader token", "an admin token", or
    /// "this token".
    pub fn who(&self) -> String {
        match self.role {
            Some(Role::Admin) => "an admin token".into(),
            Some(r) => format!("a {} token", r.as_str()),
            None => "this token".into(),
        }
    }

    /// Whether a tab has anything this token may see: not Events without a stream, not
    /// Audit when the log is denied.
    pub fn tab_available(&self, tab: Tab) -> bool {
        match tab {
            Tab::Events => !matches!(self.feed, Feed::Polled(_)),
            Tab::Audit => self.unavailable(&Fetch::Audit).is_none(),
            Tab::Overview | Tab::Orders | Tab::Book | Tab::Accounts => true,
        }
    }

    /// A trader's own user: the one user its token lists (`GET /api/users`).
    pub fn own_user(&self) -> Option<&User> {
        if self.role == Some(Role::Trader) && self.users.len() == 1 {
            self.users.first()
        } else {
            None
        }
    }

    /// The one transition: applies `action` and answers what to fetch or send.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        let mut fx = Vec::new();
        match action {
            Action::Key(k) => self.on_key(k, &mut fx),
            Action::Resize(w, h) => {
                self.screen = ratatui::layout::Rect::new(0, 0, w, h);
                let last = match &self.overlay {
                    Overlay::Help { .. } => crate::tui::views::help::max_scroll(self.screen),
                    Overlay::Detail { of, .. } => crate::tui::views::detail::max_scroll(self, of, self.screen),
                    _ => 0,
                };
                if let Overlay::Help { scroll } | Overlay::Detail { scroll, .. } = &mut self.overlay {
                    *scroll = (*scroll).min(last);
                }
            }
            Action::Tick => self.on_tick(&mut fx),
            Action::Flush => {
                self.flush(&mut fx);
                return fx;
            }
            Action::Quit => self.quit = true,
            Action::Net(n) => self.on_net(n),
        }
        self.dirty = true;
        fx
    }

    /// True when a stale snapshot is wanted by a visible view and not yet requested: the
    /// event loop then schedules an [`Action::Flush`].
    pub fn wants_flush(&self) -> bool {
        self.stale.iter().any(|k| self.wanted(k) && !self.inflight.contains(k))
    }

    // ------------------------------------------------------------ lookups for views

    /// A user's name, or a short form of the id when the users list does not know it.
    pub fn username<'a>(&'a self, user_id: &'a str) -> &'a str {
        self.users.iter().find(|u| u.user_id == user_id).map(|u| u.username.as_str()).unwrap_or_else(|| short_id(user_id))
    }

    /// The orders the filter lets through, newest first.
    pub fn visible_orders(&self) -> Vec<&Order> {
        let terms = terms(&self.orders.filter);
        self.orders.rows.iter().filter(|o| terms.iter().all(|t| self.order_matches(o, t))).collect()
    }

    /// The user and symbol the Orders filter names exactly, for the daemon to narrow the
    /// rows by: `user:NAME` or a bare known username (or id), `symbol:SYM` or a bare known
    /// symbol. Partial words still filter only the rows fetched.
    pub fn orders_scope(&self) -> OrdersScope {
        let mut scope = OrdersScope::default();
        for term in terms(&self.orders.filter) {
            let (field, value) = term.split_once(':').map_or((None, term.as_str()), |(f, v)| (Some(f), v));
            if matches!(field, None | Some("user" | "u")) {
                if let Some(u) = self.users.iter().find(|u| u.username.to_lowercase() == value || u.user_id == value) {
                    scope.user_id = Some(u.user_id.clone());
                }
            }
            if matches!(field, None | Some("symbol" | "sym" | "s")) {
                if let Some(i) = self.symbols.iter().find(|i| i.symbol.to_lowercase() == value) {
                    scope.symbol = Some(i.symbol.clone());
                }
            }
        }
        scope
    }

    /// After the Orders filter changed: fetch again if it names another user or symbol.
    fn rescope_orders(&mut self) {
        if self.tab == Tab::Orders && self.orders_scope() != self.orders.scope {
            self.stale.insert(Fetch::Orders);
        }
    }

    fn order_matches(&self, o: &Order, term: &str) -> bool {
        let value = term.split_once(':').map(|(_, v)| v).unwrap_or(term);
        let has = |field: &str| field.to_lowercase().contains(value);
        // `filled` must not match `partially_filled`: statuses match from their start, as
        // the API names them or as the table shows them (`part-filled`).
        let is_status = o.status.as_str().starts_with(value) || crate::tui::views::text::status(o.status).starts_with(value);
        let user = self.username(&o.user_id);
        let side = o.side.as_str();
        match term.split_once(':') {
            Some(("user" | "u", _)) => has(user) || has(&o.user_id),
            Some(("symbol" | "sym" | "s", _)) => has(&o.symbol),
            Some(("status" | "st", _)) => is_status,
            Some(("side", _)) => has(side),
            // The id as the table shows it (its last 8 digits) finds its order too.
            _ => {
                has(user)
                    || o.user_id.starts_with(term)
                    || crate::tui::action::short_id(&o.order_id).starts_with(term)
                    || has(&o.symbol)
                    || is_status
                    || has(side)
            }
        }
    }

    pub fn selected_order(&self) -> Option<&Order> {
        self.visible_orders().get(self.orders.selected).copied()
    }

    /// The events the filter lets through, newest first.
    pub fn visible_events(&self) -> Vec<&Event> {
        let terms = terms(&self.events.filter);
        self.events.items.iter().filter(|e| terms.is_empty() || terms.iter().any(|t| e.kind.to_lowercase().contains(t.as_str()))).collect()
    }

    pub fn selected_user(&self) -> Option<&User> {
        self.users.get(self.accounts.selected)
    }

    /// The market data of the Book's symbol, if it has arrived.
    pub fn market(&self) -> Option<&MarketData> {
        self.book.data.as_ref().filter(|d| Some(&d.symbol) == self.book.symbol.as_ref())
    }

    /// The selected user's account, if it has arrived.
    pub fn account(&self) -> Option<&Account> {
        let uid = self.selected_user()?.user_id.as_str();
        self.accounts.account.as_ref().filter(|a| a.user_id == uid)
    }

    /// How long ago (in seconds) the stream broke, while the daemon is away: the
    /// services, uptimes and rates on screen are as of then.
    pub fn away_for(&self) -> Option<u64> {
        self.away_since.map(|t| self.clock.saturating_sub(t))
    }

    /// How many tries to reconnect have failed since the stream broke (0 while live).
    pub fn failed_tries(&self) -> u32 {
        self.failed_tries
    }

    /// The last moment the daemon was heard from: now, or when the stream broke.
    fn last_heard(&self) -> u64 {
        self.away_since.unwrap_or(self.clock)
    }

    /// The daemon's uptime now, counting on from the last `/health` (until it went away).
    pub fn daemon_uptime(&self) -> Option<u64> {
        self.health.as_ref().map(|h| h.uptime_s + self.last_heard().saturating_sub(self.health_at))
    }

    /// A service's uptime now, counting on from the last `/api/services` (until the
    /// daemon went away).
    pub fn service_uptime(&self, s: &ServiceInfo) -> u64 {
        if s.state == "running" {
            s.uptime_s + self.last_heard().saturating_sub(self.services_at)
        } else {
            s.uptime_s
        }
    }

    /// Is this snapshot being fetched for the first time since the (re)connect (for
    /// "loading…")? Not a refresh: an empty list polled every second would flicker.
    pub fn loading(&self, key: &Fetch) -> bool {
        !self.answered.contains(key) && (self.inflight.contains(key) || self.stale.contains(key))
    }

    /// The filter of the current tab, if it has one.
    pub fn filter(&self) -> Option<&str> {
        match self.tab {
            Tab::Orders => Some(&self.orders.filter),
            Tab::Events => Some(&self.events.filter),
            _ => None,
        }
    }

    // ------------------------------------------------------------ keys

    fn on_key(&mut self, key: KeyEvent, fx: &mut Vec<Effect>) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.overlay, Overlay::None) {
            Overlay::None => self.on_view_key(key),
            Overlay::Help { scroll } => {
                let last = crate::tui::views::help::max_scroll(self.screen);
                match key.code {
                    KeyCode::Char('q') => self.quit = true,
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Enter => {}
                    code => self.overlay = Overlay::Help { scroll: scrolled(code, scroll, last) },
                }
            }
            Overlay::Filter { before } => self.on_filter_key(key, before),
            Overlay::Form(mut form) => match form.key(key) {
                Outcome::Cancel => {}
                Outcome::Editing => self.overlay = Overlay::Form(form),
                Outcome::Submit => {
                    let known = Known { symbols: &self.symbols, users: &self.users };
                    if let Some(command) = form.validate(&known) {
                        if let Command::Place(p) = &command {
                            self.last_user = p.user_id.clone().unwrap_or_default();
                        }
                        form.sending = true;
                        fx.push(Effect::Send(command));
                    }
                    self.overlay = Overlay::Form(form);
                }
            },
            Overlay::Detail { of, scroll } => {
                let last = crate::tui::views::detail::max_scroll(self, &of, self.screen);
                match key.code {
                    KeyCode::Char('q') => self.quit = true,
                    KeyCode::Esc | KeyCode::Enter => {}
                    code => self.overlay = Overlay::Detail { of, scroll: scrolled(code, scroll, last) },
                }
            }
            Overlay::Confirm { question, command } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    self.say(format!("{}…", command.describe()), false);
                    fx.push(Effect::Send(command));
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {}
                _ => self.overlay = Overlay::Confirm { question, command },
            },
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent, before: String) {
        let Some(filter) = self.filter_mut() else { return };
        match key.code {
            KeyCode::Enter => return,
            KeyCode::Esc => *filter = before.clone(),
            KeyCode::Backspace => {
                filter.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => filter.clear(),
            KeyCode::Char(c) if !c.is_control() && filter.chars().count() < 64 => filter.push(c),
            _ => {}
        }
        self.select_first();
        self.rescope_orders();
        if key.code != KeyCode::Esc {
            self.overlay = Overlay::Filter { before };
        }
    }

    fn filter_mut(&mut self) -> Option<&mut String> {
        match self.tab {
            Tab::Orders => Some(&mut self.orders.filter),
            Tab::Events => Some(&mut self.events.filter),
            _ => None,
        }
    }

    fn on_view_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.overlay = Overlay::Help { scroll: 0 },
            KeyCode::Esc => self.escape(),
            KeyCode::Tab => self.set_tab(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()]),
            KeyCode::BackTab => self.set_tab(Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]),
            KeyCode::Char(c @ '1'..='6') => self.set_tab(Tab::ALL[c as usize - '1' as usize]),
            KeyCode::Char('j') | KeyCode::Down => self.move_selection(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(self.list_rows.get().max(1) as isize),
            KeyCode::PageUp => self.move_selection(-(self.list_rows.get().max(1) as isize)),
            KeyCode::Char('g') | KeyCode::Home => self.select_first(),
            KeyCode::Char('G') | KeyCode::End => self.move_selection(isize::MAX / 2),
            KeyCode::Char('r') => {
                self.refresh_view();
                self.say("refreshing…", false);
            }
            KeyCode::Enter => self.open_detail(),
            KeyCode::Char('/') if self.filter().is_some() => {
                let before = self.filter().unwrap_or_default().to_string();
                self.overlay = Overlay::Filter { before };
            }
            _ => self.on_tab_key(key),
        }
    }

    fn on_tab_key(&mut self, key: KeyEvent) {
        match (self.tab, key.code) {
            (Tab::Orders | Tab::Book | Tab::Accounts, KeyCode::Char('n')) => self.open_place_form(),
            (Tab::Orders, KeyCode::Char('c')) => self.ask_cancel(),
            (Tab::Orders, KeyCode::Char('a')) => self.open_amend_form(),
            (Tab::Book, KeyCode::Char('h') | KeyCode::Left) => self.step_symbol(-1),
            (Tab::Book, KeyCode::Char('l') | KeyCode::Right) => self.step_symbol(1),
            (Tab::Accounts, KeyCode::Char('d')) => self.open_transfer_form(true),
            (Tab::Accounts, KeyCode::Char('w')) => self.open_transfer_form(false),
            (Tab::Events, KeyCode::Char(' ')) => self.toggle_pause(),
            (Tab::Audit, KeyCode::Char('v')) => {
                self.stale.insert(Fetch::AuditVerify);
                self.audit.verify = None;
            }
            _ => {}
        }
    }

    /// Esc with nothing open undoes what the tab has in effect, one thing at a time (its
    /// filter, then a paused stream), and quits once there is nothing left (DESIGN.md §6:
    /// "`q`/Esc quit"), as Esc leaves an overlay first.
    fn escape(&mut self) {
        if let Some(f) = self.filter_mut().filter(|f| !f.is_empty()) {
            f.clear();
            self.select_first();
            self.rescope_orders();
            return;
        }
        if self.tab == Tab::Events && self.events.paused {
            self.toggle_pause();
            return;
        }
        self.quit = true;
    }

    fn set_tab(&mut self, tab: Tab) {
        if tab == self.tab {
            return;
        }
        self.tab = tab;
        self.enter_view();
    }

    /// Makes sure the view just shown has its snapshots (fetched at the next flush).
    fn enter_view(&mut self) {
        match self.tab {
            Tab::Book => {
                if self.book.symbol.is_none() {
                    self.book.symbol = self.symbols.first().map(|i| i.symbol.clone());
                }
                if let Some(s) = &self.book.symbol {
                    if self.market().is_none() {
                        self.stale.insert(Fetch::Market(s.clone()));
                    }
                }
            }
            Tab::Accounts => self.want_account(),
            Tab::Audit if self.audit.verify.is_none() => {
                self.stale.insert(Fetch::AuditVerify);
            }
            _ => {}
        }
    }

    /// `r`: fetch everything the current view shows again.
    fn refresh_view(&mut self) {
        self.stale.extend([Fetch::Health, Fetch::Services, Fetch::Users, Fetch::Symbols]);
        self.stale.extend(self.shown());
        if self.tab == Tab::Audit {
            self.stale.insert(Fetch::AuditVerify);
        }
        self.errors.clear();
    }

    /// The snapshots the current tab's body shows, besides the ones every tab keeps.
    fn shown(&self) -> Option<Fetch> {
        match self.tab {
            Tab::Orders => Some(Fetch::Orders),
            Tab::Book => self.book.symbol.clone().map(Fetch::Market),
            Tab::Accounts => self.selected_user().map(|u| Fetch::Account(u.user_id.clone())),
            Tab::Audit => Some(Fetch::Audit),
            Tab::Overview | Tab::Events => None,
        }
    }

    fn list_len(&self) -> usize {
        match self.tab {
            Tab::Orders => self.visible_orders().len(),
            Tab::Accounts => self.users.len(),
            Tab::Events => self.visible_events().len(),
            Tab::Audit => self.audit.records.len(),
            Tab::Overview | Tab::Book => 0,
        }
    }

    fn selection_mut(&mut self) -> Option<&mut usize> {
        match self.tab {
            Tab::Orders => Some(&mut self.orders.selected),
            Tab::Accounts => Some(&mut self.accounts.selected),
            Tab::Events => Some(&mut self.events.selected),
            Tab::Audit => Some(&mut self.audit.selected),
            Tab::Overview | Tab::Book => None,
        }
    }

    fn move_selection(&mut self, by: isize) {
        let len = self.list_len();
        let before = self.accounts.selected;
        if let Some(sel) = self.selection_mut() {
            let max = len.saturating_sub(1) as isize;
            *sel = (*sel as isize).saturating_add(by).clamp(0, max) as usize;
        }
        if self.tab == Tab::Accounts && self.accounts.selected != before {
            self.want_account();
        }
    }

    fn select_first(&mut self) {
        let before = self.accounts.selected;
        if let Some(sel) = self.selection_mut() {
            *sel = 0;
        }
        if self.tab == Tab::Accounts && self.accounts.selected != before {
            self.want_account();
        }
    }

    fn want_account(&mut self) {
        if let Some(u) = self.selected_user() {
            if self.account().is_none() {
                let key = Fetch::Account(u.user_id.clone());
                self.stale.insert(key);
            }
        }
    }

    fn step_symbol(&mut self, by: isize) {
        if self.symbols.is_empty() {
            return;
        }
        let n = self.symbols.len() as isize;
        let at = self
            .book
            .symbol
            .as_ref()
            .and_then(|s| self.symbols.iter().position(|i| &i.symbol == s))
            .map(|i| i as isize)
            .unwrap_or(-by.signum());
        let next = self.symbols[(at + by).rem_euclid(n) as usize].symbol.clone();
        self.show_symbol(next);
    }

    fn show_symbol(&mut self, symbol: String) {
        if self.book.symbol.as_deref() != Some(symbol.as_str()) {
            self.book.symbol = Some(symbol.clone());
            self.stale.insert(Fetch::Market(symbol));
        }
    }

    fn toggle_pause(&mut self) {
        self.events.paused = !self.events.paused;
        if !self.events.paused {
            self.events.held_count = 0;
            for e in std::mem::take(&mut self.events.held) {
                self.show_event(e);
            }
        }
    }

    /// Refuses a change in a read-only session, saying why.
    fn writable(&mut self) -> bool {
        if self.read_only() {
            let why = if self.role == Some(Role::Viewer) { "a viewer token" } else { "--read-only" };
            self.say(format!("read-only session ({why}): nothing can be changed from here"), true);
            false
        } else {
            true
        }
    }

    fn open_place_form(&mut self) {
        if !self.writable() {
            return;
        }
        let user = match self.tab {
            Tab::Accounts => self.selected_user().map(|u| u.username.clone()),
            Tab::Orders => self.selected_order().map(|o| self.username(&o.user_id).to_string()),
            _ => None,
        };
        // A trader's own user (its token acts for no other); else the selected order's or
        // account's user; with none selected, the last form's.
        let own = self.own_user().map(|u| u.username.clone());
        let user = own.or(user).unwrap_or_else(|| self.last_user.clone());
        let symbol = match self.tab {
            Tab::Orders => self.selected_order().map(|o| o.symbol.clone()).or(self.book.symbol.clone()),
            _ => self.book.symbol.clone(),
        };
        self.overlay = Overlay::Form(Form::place(&user, &symbol.unwrap_or_default()));
    }

    /// Enter: the selected row whole, where the table cuts it (a reject reason, a long
    /// name or symbol, an event's data, an audit record's detail).
    fn open_detail(&mut self) {
        let of = match self.tab {
            Tab::Orders => self.selected_order().map(|o| Detail::Order(o.order_id.clone())),
            Tab::Events => self.visible_events().get(self.events.selected).map(|e| Detail::Event(e.seq)),
            Tab::Audit => self.audit.records.iter().rev().nth(self.audit.selected).map(|r| Detail::Audit(r.seq)),
            Tab::Overview | Tab::Book | Tab::Accounts => return,
        };
        if let Some(of) = of {
            self.overlay = Overlay::Detail { of, scroll: 0 };
        }
    }

    fn ask_cancel(&mut self) {
        let Some(o) = self.selected_order().cloned() else {
            self.say("no order selected", true);
            return;
        };
        if !o.status.is_open() {
            self.say(format!("order {} is {}; only open orders can be cancelled", short_id(&o.order_id), o.status.as_str()), true);
            return;
        }
        if !self.writable() {
            return;
        }
        let question = format!("Cancel order {} ({}: {})?", short_id(&o.order_id), self.username(&o.user_id), describe(&o));
        self.overlay = Overlay::Confirm { question, command: Command::Cancel { order_id: o.order_id } };
    }

    fn open_amend_form(&mut self) {
        let Some(o) = self.selected_order().cloned() else {
            self.say("no order selected", true);
            return;
        };
        if !o.status.is_open() || o.price.is_none() {
            self.say(format!("order {} is {}; only open limit orders can be amended", short_id(&o.order_id), o.status.as_str()), true);
            return;
        }
        if !self.writable() {
            return;
        }
        self.overlay = Overlay::Form(Form::amend(&o.order_id, &o.symbol, o.price, o.quantity, o.filled_quantity));
    }

    fn open_transfer_form(&mut self, deposit: bool) {
        let Some(u) = self.selected_user().cloned() else {
            self.say("no user selected", true);
            return;
        };
        if !self.writable() {
            return;
        }
        if !self.may_transfer() {
            self.say(format!("deposits and withdrawals need an admin token; {} places, amends and cancels orders", self.who()), true);
            return;
        }
        let form = if deposit { Form::deposit(&u.user_id, &u.username) } else { Form::withdraw(&u.user_id, &u.username) };
        self.overlay = Overlay::Form(form);
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.flash = Some(Flash { text: text.into(), error, until: self.clock + FLASH_TICKS });
    }

    // ------------------------------------------------------------ time

    fn on_tick(&mut self, fx: &mut Vec<Effect>) {
        self.clock += 1;
        self.rates.tick();
        if self.flash.as_ref().is_some_and(|f| self.clock > f.until) {
            self.flash = None;
        }
        // Polled snapshots, only while someone looks: counters have no events, and the
        // services' mailbox depths change without one (every few seconds is enough).
        if self.tab == Tab::Overview && self.conn == Conn::Live {
            if self.inflight.insert(Fetch::Metrics) {
                fx.push(Effect::Fetch(Fetch::Metrics));
            }
            if self.clock.is_multiple_of(SERVICES_POLL_TICKS) {
                self.stale.insert(Fetch::Services);
            }
        }
        // Without events, nothing says a snapshot changed: what the tab shows is asked
        // for again each second (one request in flight per snapshot at most), the health
        // and the instruments now and then.
        if self.polled() && self.conn == Conn::Live {
            self.stale.extend(self.shown());
            if self.clock.is_multiple_of(SERVICES_POLL_TICKS) {
                self.stale.insert(Fetch::Health);
            }
            if self.clock.is_multiple_of(SYMBOLS_POLL_TICKS) {
                self.stale.insert(Fetch::Symbols);
            }
        }
    }

    /// How many events, at least, what a visible view shows may lack: the most of the
    /// last answers of its snapshots that the daemon marked behind its event bus; `None`
    /// while they are current.
    pub fn feeds_behind(&self) -> Option<u64> {
        self.behind.iter().filter(|(k, _)| self.wanted(k)).map(|(_, n)| *n).max()
    }

    /// The last refresh of something the current tab shows that failed, if any: its rows
    /// stay on screen, so the status line must say they are not current.
    pub fn refresh_error(&self) -> Option<&str> {
        self.errors.iter().find(|(k, _)| **k != Fetch::Metrics && self.wanted(k)).map(|(_, e)| e.as_str())
    }

    /// Would a visible view show this snapshot (and may this token read it)?
    fn wanted(&self, key: &Fetch) -> bool {
        if self.denied.contains_key(key) {
            return false;
        }
        match key {
            Fetch::Health | Fetch::Services | Fetch::Users | Fetch::Symbols => true,
            Fetch::Orders => self.tab == Tab::Orders,
            Fetch::Market(s) => self.tab == Tab::Book && self.book.symbol.as_ref() == Some(s),
            Fetch::Account(u) => self.tab == Tab::Accounts && self.selected_user().is_some_and(|x| &x.user_id == u),
            Fetch::Audit | Fetch::AuditVerify => self.tab == Tab::Audit,
            Fetch::Metrics => false,
        }
    }

    fn flush(&mut self, fx: &mut Vec<Effect>) {
        if self.conn != Conn::Live {
            return;
        }
        let due: Vec<Fetch> = self.stale.iter().filter(|k| self.wanted(k) && !self.inflight.contains(k)).cloned().collect();
        for key in due {
            self.stale.remove(&key);
            self.inflight.insert(key.clone());
            if key == Fetch::Orders {
                self.orders.scope = self.orders_scope();
                fx.push(Effect::FetchOrders(self.orders.scope.clone()));
            } else {
                fx.push(Effect::Fetch(key));
            }
        }
    }

    // ------------------------------------------------------------ the daemon

    fn on_net(&mut self, net: Net) {
        match net {
            Net::Connected { head, own } => self.connected(if own { Feed::Own } else { Feed::Events }, head),
            Net::Polling(why) => self.connected(Feed::Polled(why), 0),
            Net::Disconnected(why) => {
                // The first report is the break itself; each one after it, a try that failed.
                if matches!(self.conn, Conn::Reconnecting(_)) {
                    self.failed_tries += 1;
                }
                self.conn = Conn::Reconnecting(why);
                self.away_since.get_or_insert(self.clock);
            }
            Net::Refused(why) => {
                self.conn = Conn::Refused(why);
                self.away_since.get_or_insert(self.clock);
            }
            Net::Role(role) => {
                self.role = Some(role);
                self.denied = denied_to(role).iter().map(|(k, why)| (k.clone(), why.to_string())).collect();
            }
            Net::Event(e) => self.on_event(*e),
            Net::Snapshot(s, behind) => self.on_snapshot(s, behind),
            Net::FetchFailed(key, failure) => {
                self.inflight.remove(&key);
                if failure.status == 403 && failure.code == "forbidden" {
                    // Not an outage: this token may never read it. Say so where it would
                    // show, and do not ask again.
                    self.errors.remove(&key);
                    self.denied.insert(key, failure.message);
                } else if key != Fetch::Metrics {
                    self.errors.insert(key, failure.text());
                }
            }
            Net::Done(command, result) => self.on_done(command, result),
        }
    }

    /// The daemon answers again, with events or polled: anything may have changed.
    fn connected(&mut self, feed: Feed, head: u64) {
        self.conn = Conn::Live;
        self.away_since = None;
        self.failed_tries = 0;
        self.feed = feed;
        self.replayed_to = head;
        // Anything may have changed while we were away.
        self.inflight.clear();
        self.answered.clear();
        self.errors.clear();
        self.rates.reset_metrics();
        self.stale.extend([Fetch::Health, Fetch::Services, Fetch::Users, Fetch::Symbols, Fetch::Orders, Fetch::Audit, Fetch::AuditVerify]);
        if let Some(s) = &self.book.symbol {
            self.stale.insert(Fetch::Market(s.clone()));
        }
        if let Some(u) = self.selected_user() {
            self.stale.insert(Fetch::Account(u.user_id.clone()));
        }
    }

    fn on_event(&mut self, e: Event) {
        self.last_seq = self.last_seq.max(e.seq);
        // History replayed on connect is not a rate.
        if e.seq > self.replayed_to {
            self.rates.count_event();
        }
        let text = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind = e.kind.as_str();
        // Only the book and the account on screen are tracked: choosing another symbol or
        // user fetches it anyway, and this keeps the stale set a handful of keys.
        let shown_symbol = self.book.symbol.clone();
        let shown_user = self.selected_user().map(|u| u.user_id.clone());
        // Every event is also an audit record.
        self.stale.insert(Fetch::Audit);
        if kind.starts_with("ORDER_") || kind == "TRADE_EXECUTED" {
            if kind.starts_with("ORDER_") {
                self.stale.insert(Fetch::Orders);
            }
            // A status update carries no symbol: it may concern the book on screen.
            let symbol = text("symbol");
            if let Some(s) = &symbol {
                if !self.symbols.is_empty() && !self.symbols.iter().any(|i| &i.symbol == s) {
                    self.stale.insert(Fetch::Symbols);
                }
            }
            if let Some(shown) = shown_symbol.filter(|s| symbol.as_ref().is_none_or(|x| x == s)) {
                self.stale.insert(Fetch::Market(shown));
            }
            // Orders hold and settle funds; a trade names orders, not users.
            if let Some(shown) = shown_user.filter(|u| text("user_id").is_none_or(|x| &x == u)) {
                self.stale.insert(Fetch::Account(shown));
            }
        } else if kind.starts_with("ACCOUNT_") {
            if let Some(shown) = shown_user.filter(|u| text("user_id").as_ref() == Some(u)) {
                self.stale.insert(Fetch::Account(shown));
            }
        } else if kind.starts_with("USER_") {
            self.stale.insert(Fetch::Users);
        } else if kind.starts_with("SERVICE_") {
            self.stale.extend([Fetch::Services, Fetch::Health]);
        }
        if self.events.paused {
            self.events.held_count += 1;
            if self.events.held.len() == EVENT_HISTORY {
                self.events.held.pop_front();
            }
            self.events.held.push_back(e);
        } else {
            self.show_event(e);
        }
    }

    fn show_event(&mut self, e: Event) {
        // Keep the selected event under the cursor when new ones arrive above it.
        if self.events.selected > 0 {
            let terms = terms(&self.events.filter);
            if terms.is_empty() || terms.iter().any(|t| e.kind.to_lowercase().contains(t.as_str())) {
                self.events.selected += 1;
            }
        }
        self.events.items.push_front(e);
        self.events.items.truncate(EVENT_HISTORY);
        // Counting what the filter shows walks the whole list: only when scrolled.
        if self.events.selected > 0 {
            let len = self.visible_events().len();
            self.events.selected = self.events.selected.min(len.saturating_sub(1));
        }
    }

    fn on_snapshot(&mut self, s: Snapshot, behind: Option<u64>) {
        let key = match &s {
            Snapshot::Health(_) => Fetch::Health,
            Snapshot::Services(_) => Fetch::Services,
            Snapshot::Orders(_) => Fetch::Orders,
            Snapshot::Users(_) => Fetch::Users,
            Snapshot::Symbols(_) => Fetch::Symbols,
            Snapshot::Market(m) => Fetch::Market(m.symbol.clone()),
            Snapshot::Account(a) => Fetch::Account(a.user_id.clone()),
            Snapshot::Audit(_) => Fetch::Audit,
            Snapshot::AuditVerify(_) => Fetch::AuditVerify,
            Snapshot::Metrics(_) => Fetch::Metrics,
        };
        self.inflight.remove(&key);
        self.errors.remove(&key);
        match behind {
            Some(n) => self.behind.insert(key.clone(), n),
            None => self.behind.remove(&key),
        };
        self.answered.insert(key);
        match s {
            Snapshot::Health(h) => {
                self.health = Some(h);
                self.health_at = self.clock;
            }
            Snapshot::Services(list) => {
                self.services = list;
                self.services_at = self.clock;
            }
            Snapshot::Orders(rows) => {
                // The top row follows the newest order, as in Events; another row stays
                // on its order.
                let follow_newest = self.orders.selected == 0;
                let keep =
                    self.orders.select_next.take().or_else(|| self.selected_order().filter(|_| !follow_newest).map(|o| o.order_id.clone()));
                self.orders.rows = rows;
                let visible = self.visible_orders();
                self.orders.selected = keep
                    .and_then(|id| visible.iter().position(|o| o.order_id == id))
                    .unwrap_or(if follow_newest { 0 } else { self.orders.selected })
                    .min(visible.len().saturating_sub(1));
            }
            Snapshot::Users(mut users) => {
                users.sort_by(|a, b| a.username.cmp(&b.username));
                let keep = self.selected_user().map(|u| u.user_id.clone());
                self.users = users;
                self.accounts.selected = keep
                    .and_then(|id| self.users.iter().position(|u| u.user_id == id))
                    .unwrap_or(self.accounts.selected)
                    .min(self.users.len().saturating_sub(1));
                self.want_account();
            }
            Snapshot::Symbols(list) => {
                self.symbols = list;
                if self.book.symbol.is_none() {
                    if let Some(first) = self.symbols.first().map(|i| i.symbol.clone()) {
                        self.show_symbol(first);
                    }
                }
            }
            Snapshot::Market(m) => self.book.data = Some(m),
            Snapshot::Account(a) => self.accounts.account = Some(a),
            Snapshot::Audit(records) => {
                // As in Orders: the top row follows the newest record, another row stays
                // on its record (by seq) while new ones push in above it.
                let keep = self.audit.records.iter().rev().nth(self.audit.selected).map(|r| r.seq).filter(|_| self.audit.selected > 0);
                self.audit.records = records;
                self.audit.selected = keep
                    .and_then(|seq| self.audit.records.iter().rev().position(|r| r.seq == seq))
                    .unwrap_or(self.audit.selected)
                    .min(self.audit.records.len().saturating_sub(1));
            }
            Snapshot::AuditVerify(v) => self.audit.verify = Some(v),
            Snapshot::Metrics(m) => self.rates.add_metrics(m),
        }
    }

    fn on_done(&mut self, command: Command, result: Result<serde_json::Value, Failure>) {
        let form_waiting = matches!(&self.overlay, Overlay::Form(f) if f.sending);
        match result {
            Ok(answer) => {
                if form_waiting {
                    self.overlay = Overlay::None;
                }
                match &command {
                    Command::Place(_) | Command::Amend { .. } | Command::Cancel { .. } => {
                        let order: Option<Order> = serde_json::from_value(answer).ok();
                        let text = match (&command, &order) {
                            (Command::Place(_), Some(o)) => {
                                format!("placed {} {}: {}", short_id(&o.order_id), describe(o), o.status.as_str())
                            }
                            (Command::Amend { .. }, Some(o)) => format!("amended {}: {}", short_id(&o.order_id), describe(o)),
                            (Command::Cancel { .. }, Some(o)) => format!("cancelled {} ({})", short_id(&o.order_id), o.status.as_str()),
                            _ => format!("done: {}", command.describe()),
                        };
                        self.say(text, false);
                        self.stale.insert(Fetch::Orders);
                        if let Some(o) = order {
                            if let Command::Place(_) = command {
                                // Show the new order where the user will look for it.
                                self.orders.select_next = Some(o.order_id.clone());
                                self.show_symbol(o.symbol.clone());
                            }
                            self.stale.insert(Fetch::Market(o.symbol));
                            self.stale.insert(Fetch::Account(o.user_id));
                        }
                    }
                    Command::Deposit { .. } | Command::Withdraw { .. } => {
                        if let Ok(a) = serde_json::from_value::<Account>(answer) {
                            self.accounts.account = Some(a);
                        }
                        self.say(format!("done: {}", command.describe()), false);
                    }
                }
            }
            Err(failure) => {
                if let Overlay::Form(f) = &mut self.overlay {
                    if f.sending {
                        // The form stays open with the daemon's own words, to fix and resend.
                        f.sending = false;
                        f.error = Some(failure.outcome());
                        return;
                    }
                }
                self.say(failure.outcome_of(&command.describe()), true);
                // A refused cancel usually means the order moved on: show what it is now.
                self.stale.insert(Fetch::Orders);
            }
        }
    }
}

/// `buy 10 AAPL @ 150.25`, `sell 3 AAPL mkt`.
pub fn describe(o: &Order) -> String {
    let side = o.side.as_str();
    match o.price {
        Some(p) => format!("{side} {} {} @ {}", o.quantity.normalize(), o.symbol, p.normalize()),
        None => format!("{side} {} {} mkt", o.quantity.normalize(), o.symbol),
    }
}

/// The words of a filter, lower-cased.
fn terms(filter: &str) -> Vec<String> {
    filter.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
