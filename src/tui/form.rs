//! The forms of the dashboard (new order, amend, deposit, withdraw): their fields, key
//! handling and validation. Drawing is `views/form.rs`.
//!
//! Validation runs before anything is sent and writes its complaint next to the field
//! that caused it, with what a correct value looks like; checks the daemon would make
//! anyway (tick, lot, known symbol and user) are repeated here only because they can be
//! answered without a round trip. Whatever the daemon still refuses comes back as its
//! own message in [`Form::error`], and the form stays open to fix it.

use super::action::Command;
use crate::api::{AmendOrder, Instrument, OrderType, PlaceOrder, Side, TimeInForce, Transfer, User};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rust_decimal::Decimal;

/// What a form does when submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    Place,
    /// The order's symbol and filled quantity, to check the new terms against.
    Amend {
        order_id: String,
        symbol: String,
        filled: Decimal,
    },
    Deposit {
        user_id: String,
        username: String,
    },
    Withdraw {
        user_id: String,
        username: String,
    },
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Text(String),
    /// One of a fixed set, changed with ←/→ or space.
    Choice {
        options: &'static [&'static str],
        index: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub input: Input,
    /// Why the value is not acceptable; shown beside the field.
    pub error: Option<String>,
    /// What to type, shown while there is no error.
    pub hint: &'static str,
}

impl Field {
    fn text(label: &'static str, value: &str, hint: &'static str) -> Field {
        Field { label, input: Input::Text(value.to_string()), error: None, hint }
    }

    fn choice(label: &'static str, options: &'static [&'static str], index: usize) -> Field {
        Field { label, input: Input::Choice { options, index }, error: None, hint: "←/→ to change" }
    }

    /// The value as shown and as validated.
    pub fn value(&self) -> &str {
        match &self.input {
            Input::Text(s) => s.trim(),
            Input::Choice { options, index } => options[*index],
        }
    }
}

/// What a key did to the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still editing.
    Editing,
    /// Esc: close without sending.
    Cancel,
    /// Enter: validate and, if valid, send.
    Submit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub focus: usize,
    /// What became of what was sent, when it failed ([`Failure::outcome`]): the daemon's
    /// refusal, or that it was never reached.
    pub error: Option<String>,
    /// Sent and waiting for the answer: keys other than Esc are ignored meanwhile.
    pub sending: bool,
}

const SIDES: &[&str] = &["buy", "sell"];
const TYPES: &[&str] = &["limit", "market"];
const TIFS: &[&str] = &["gtc", "ioc", "fok"];

/// Field labels, used to find fields by name.
pub const USER: &str = "User";
pub const SYMBOL: &str = "Symbol";
pub const SIDE: &str = "Side";
pub const TYPE: &str = "Type";
pub const QUANTITY: &str = "Quantity";
pub const PRICE: &str = "Price";
pub const TIF: &str = "Time in force";
pub const ASSET: &str = "Asset";
pub const AMOUNT: &str = "Amount";

/// What validation may look up locally.
pub struct Known<'a> {
    pub symbols: &'a [Instrument],
    pub users: &'a [User],
}

impl Form {
    /// A new order, prefilled with what the user was looking at.
    pub fn place(user: &str, symbol: &str) -> Form {
        Form::new(
            FormKind::Place,
            vec![
                Field::text(USER, user, "username or id"),
                Field::text(SYMBOL, symbol, "e.g. AAPL"),
                Field::choice(SIDE, SIDES, 0),
                Field::choice(TYPE, TYPES, 0),
                Field::text(QUANTITY, "", "e.g. 10"),
                Field::text(PRICE, "", "limit price, e.g. 150.25"),
                Field::choice(TIF, TIFS, 0),
            ],
        )
    }

    /// An amend of an open order: its price and quantity, to change either.
    /// `symbol` and `filled` check the new terms before they are sent: on the tick, and a
    /// new total above what has filled, its remainder on the lot.
    pub fn amend(order_id: &str, symbol: &str, price: Option<Decimal>, quantity: Decimal, filled: Decimal) -> Form {
        Form::new(
            FormKind::Amend { order_id: order_id.to_string(), symbol: symbol.to_string(), filled },
            vec![
                Field::text(PRICE, &price.map(|p| p.normalize().to_string()).unwrap_or_default(), "new limit price"),
                Field::text(QUANTITY, &quantity.normalize().to_string(), "new total quantity"),
            ],
        )
    }

    pub fn deposit(user_id: &str, username: &str) -> Form {
        Form::new(
            FormKind::Deposit { user_id: user_id.to_string(), username: username.to_string() },
            vec![Field::text(ASSET, "USD", "USD or a base asset, e.g. AAPL"), Field::text(AMOUNT, "", "e.g. 1000")],
        )
    }

    pub fn withdraw(user_id: &str, username: &str) -> Form {
        Form::new(
            FormKind::Withdraw { user_id: user_id.to_string(), username: username.to_string() },
            vec![Field::text(ASSET, "USD", "USD or a base asset, e.g. AAPL"), Field::text(AMOUNT, "", "e.g. 1000")],
        )
    }

    fn new(kind: FormKind, fields: Vec<Field>) -> Form {
        // Start on the first empty text field: the one the user most likely came to fill.
        let focus = fields.iter().position(|f| matches!(&f.input, Input::Text(s) if s.is_empty())).unwrap_or(0);
        Form { kind, fields, focus, error: None, sending: false }
    }

    pub fn title(&self) -> String {
        match &self.kind {
            FormKind::Place => "New order".into(),
            FormKind::Amend { order_id, .. } => format!("Amend order {}", super::action::short_id(order_id)),
            FormKind::Deposit { username, .. } => format!("Deposit to {username}"),
            FormKind::Withdraw { username, .. } => format!("Withdraw from {username}"),
        }
    }

    pub fn field(&self, label: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.label == label)
    }

    fn field_mut(&mut self, label: &str) -> Option<&mut Field> {
        self.fields.iter_mut().find(|f| f.label == label)
    }

    fn value(&self, label: &str) -> &str {
        self.field(label).map(Field::value).unwrap_or("")
    }

    /// True when the price field means nothing (a market order).
    pub fn price_unused(&self) -> bool {
        self.kind == FormKind::Place && self.value(TYPE) == "market"
    }

    /// Applies one key.
    pub fn key(&mut self, key: KeyEvent) -> Outcome {
        if key.code == KeyCode::Esc {
            return Outcome::Cancel;
        }
        if self.sending {
            return Outcome::Editing;
        }
        let n = self.fields.len();
        match key.code {
            KeyCode::Enter => return Outcome::Submit,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + n - 1) % n,
            code => {
                let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
                let field = &mut self.fields[self.focus];
                match &mut field.input {
                    Input::Text(s) => match code {
                        KeyCode::Backspace => {
                            s.pop();
                        }
                        KeyCode::Char('u') if ctrl => s.clear(),
                        KeyCode::Char(c) if !ctrl && !c.is_control() && s.chars().count() < 64 => s.push(c),
                        _ => return Outcome::Editing,
                    },
                    Input::Choice { options, index } => match code {
                        KeyCode::Left => *index = (*index + options.len() - 1) % options.len(),
                        KeyCode::Right | KeyCode::Char(' ') => *index = (*index + 1) % options.len(),
                        // The first letter picks an option: b/s, l/m, g/i/f.
                        KeyCode::Char(c) => {
                            if let Some(i) = options.iter().position(|o| o.starts_with(c.to_ascii_lowercase())) {
                                *index = i;
                            }
                        }
                        _ => return Outcome::Editing,
                    },
                }
                // Editing a field retracts what was said about it.
                field.error = None;
                self.error = None;
            }
        }
        Outcome::Editing
    }

    /// Checks every field, marks the bad ones, and builds the command when all are good.
    pub fn validate(&mut self, known: &Known) -> Option<Command> {
        for f in &mut self.fields {
            f.error = None;
        }
        self.error = None;
        let command = match self.kind.clone() {
            FormKind::Place => self.validate_place(known),
            FormKind::Amend { order_id, symbol, filled } => self.validate_amend(order_id, &symbol, filled, known),
            FormKind::Deposit { user_id, .. } => self.transfer().map(|transfer| Command::Deposit { user_id, transfer }),
            FormKind::Withdraw { user_id, .. } => self.transfer().map(|transfer| Command::Withdraw { user_id, transfer }),
        };
        if command.is_none() {
            // Put the cursor on the first complaint.
            if let Some(i) = self.fields.iter().position(|f| f.error.is_some()) {
                self.focus = i;
            }
        }
        command
    }

    fn complain(&mut self, label: &str, why: impl Into<String>) {
        if let Some(f) = self.field_mut(label) {
            f.error.get_or_insert(why.into());
        }
    }

    fn validate_place(&mut self, known: &Known) -> Option<Command> {
        // A username is known in any case, as the daemon finds it.
        let user = self.value(USER).to_string();
        if user.is_empty() {
            self.complain(USER, "required: a username or user id");
        } else if !known.users.is_empty() && !known.users.iter().any(|u| u.username.eq_ignore_ascii_case(&user) || u.user_id == user) {
            self.complain(USER, format!("no user {user:?}"));
        }
        let symbol = self.value(SYMBOL).to_uppercase();
        let instrument = known.symbols.iter().find(|i| i.symbol == symbol);
        if symbol.is_empty() {
            self.complain(SYMBOL, "required, e.g. AAPL");
        } else if instrument.is_none() && !known.symbols.is_empty() {
            // Five names, and how many more: a list cut without a word reads as all there is.
            let names: Vec<&str> = known.symbols.iter().take(5).map(|i| i.symbol.as_str()).collect();
            let more = match known.symbols.len().saturating_sub(5) {
                0 => String::new(),
                n => format!(" and {n} more (Book tab, h/l)"),
            };
            self.complain(SYMBOL, format!("unknown symbol; known: {}{more}", names.join(" ")));
        }
        let market = self.price_unused();
        let quantity = self.positive(QUANTITY, "e.g. 10");
        let price = if market { None } else { self.positive(PRICE, "e.g. 150.25") };
        if let (Some(q), Some(i)) = (quantity, instrument) {
            if !multiple_of(q, i.lot) {
                self.complain(QUANTITY, format!("must be a multiple of the lot {}", i.lot.normalize()));
            }
        }
        if let (Some(p), Some(i)) = (price, instrument) {
            if !multiple_of(p, i.tick) {
                self.complain(PRICE, format!("must be on the tick {}", i.tick.normalize()));
            }
        }
        if self.fields.iter().any(|f| f.error.is_some()) {
            return None;
        }
        let side = if self.value(SIDE) == "sell" { Side::Sell } else { Side::Buy };
        let time_in_force = match self.value(TIF) {
            "ioc" => TimeInForce::Ioc,
            "fok" => TimeInForce::Fok,
            _ => TimeInForce::Gtc,
        };
        Some(Command::Place(PlaceOrder {
            user_id: Some(user),
            symbol,
            side,
            quantity: quantity?,
            price,
            kind: Some(if market { OrderType::Market } else { OrderType::Limit }),
            time_in_force: Some(time_in_force),
            client_order_id: None,
        }))
    }

    fn validate_amend(&mut self, order_id: String, symbol: &str, filled: Decimal, known: &Known) -> Option<Command> {
        let price = self.positive(PRICE, "e.g. 150.25");
        let quantity = self.positive(QUANTITY, "e.g. 10");
        let instrument = known.symbols.iter().find(|i| i.symbol == symbol);
        if let (Some(p), Some(i)) = (price, instrument) {
            if !multiple_of(p, i.tick) {
                self.complain(PRICE, format!("must be on the tick {}", i.tick.normalize()));
            }
        }
        if let Some(q) = quantity {
            if q <= filled {
                self.complain(QUANTITY, format!("the new total must exceed the {} already filled", filled.normalize()));
            } else if let Some(i) = instrument.filter(|i| !multiple_of(q - filled, i.lot)) {
                self.complain(QUANTITY, format!("must be a multiple of the lot {}", i.lot.normalize()));
            }
        }
        if self.fields.iter().any(|f| f.error.is_some()) {
            return None;
        }
        Some(Command::Amend { order_id, amend: AmendOrder { price, quantity } })
    }

    fn transfer(&mut self) -> Option<Transfer> {
        let asset = self.value(ASSET).to_uppercase();
        if asset.is_empty() {
            self.complain(ASSET, "required, e.g. USD");
        }
        let amount = self.positive(AMOUNT, "e.g. 1000");
        if self.fields.iter().any(|f| f.error.is_some()) {
            return None;
        }
        Some(Transfer { asset, amount: amount? })
    }

    /// A required positive decimal, or a complaint on the field.
    fn positive(&mut self, label: &str, example: &str) -> Option<Decimal> {
        let raw = self.value(label).to_string();
        if raw.is_empty() {
            self.complain(label, format!("required, {example}"));
            return None;
        }
        // The API's own reading: exact, and no `_` separators (rust_decimal skips them).
        match crate::api::decimal::parse(&raw) {
            Ok(d) if d > Decimal::ZERO => Some(d),
            Ok(_) => {
                self.complain(label, "must be greater than 0");
                None
            }
            // "not a number" and the example only for text that is none ("ten", "-");
            // else the parser's own reason, which says what to fix: a number too large
            // or too long to keep exactly (30 nines was "not a number"), a separator, a
            // point without a digit on each side (`5.`), a plus sign.
            Err(e) if e.is_not_a_number() => {
                self.complain(label, format!("not a number, {example}"));
                None
            }
            Err(e) => {
                self.complain(label, e.to_string());
                None
            }
        }
    }
}

fn multiple_of(x: Decimal, step: Decimal) -> bool {
    step <= Decimal::ZERO || (x % step).is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEvent;

    fn typing(form: &mut Form, text: &str) {
        for c in text.chars() {
            form.key(KeyEvent::from(KeyCode::Char(c)));
        }
    }

    fn aapl() -> Instrument {
        Instrument {
            symbol: "AAPL".into(),
            base: "AAPL".into(),
            quote: "USD".into(),
            tick: Decimal::new(1, 2),
            lot: Decimal::ONE,
            min_quantity: Decimal::ONE,
            max_quantity: Decimal::new(1_000_000, 0),
        }
    }

    #[test]
    fn a_limit_order_needs_a_price_on_the_tick() {
        let symbols = [aapl()];
        let known = Known { symbols: &symbols, users: &[] };
        let mut f = Form::place("alice", "AAPL");
        assert_eq!(f.fields[f.focus].label, QUANTITY, "starts on the first empty field");
        typing(&mut f, "10");
        assert!(f.validate(&known).is_none());
        assert_eq!(f.field(PRICE).unwrap().error.as_deref(), Some("required, e.g. 150.25"));
        assert_eq!(f.fields[f.focus].label, PRICE, "focus moves to the complaint");
        typing(&mut f, "150.005");
        assert!(f.field(PRICE).unwrap().error.is_none(), "typing retracts the complaint");
        assert!(f.validate(&known).is_none());
        assert_eq!(f.field(PRICE).unwrap().error.as_deref(), Some("must be on the tick 0.01"));
        f.key(KeyEvent::from(KeyCode::Backspace));
        let Some(Command::Place(p)) = f.validate(&known) else { panic!("valid") };
        assert_eq!((p.symbol.as_str(), p.quantity, p.price), ("AAPL", Decimal::new(10, 0), Some(Decimal::new(15000, 2))));
    }

    #[test]
    fn a_market_order_ignores_the_price() {
        let mut f = Form::place("alice", "AAPL");
        f.focus = 3;
        f.key(KeyEvent::from(KeyCode::Char('m')));
        assert!(f.price_unused());
        f.focus = 4;
        typing(&mut f, "3");
        let Some(Command::Place(p)) = f.validate(&Known { symbols: &[], users: &[] }) else { panic!("valid") };
        assert_eq!((p.kind, p.price), (Some(OrderType::Market), None));
    }

    #[test]
    fn an_unknown_symbol_lists_some_known_ones_and_says_how_many_more() {
        let symbols: Vec<Instrument> =
            ["AAPL", "B", "C", "D", "E", "F", "G"].iter().map(|s| Instrument { symbol: s.to_string(), ..aapl() }).collect();
        let mut f = Form::place("alice", "ZZZ");
        typing(&mut f, "1");
        f.validate(&Known { symbols: &symbols, users: &[] });
        assert_eq!(f.field(SYMBOL).unwrap().error.as_deref(), Some("unknown symbol; known: AAPL B C D E and 2 more (Book tab, h/l)"));
        let mut f = Form::place("alice", "ZZZ");
        f.validate(&Known { symbols: &symbols[..2], users: &[] });
        assert_eq!(f.field(SYMBOL).unwrap().error.as_deref(), Some("unknown symbol; known: AAPL B"));
    }

    #[test]
    fn a_username_in_another_case_is_a_known_user() {
        let user = |name: &str| User {
            user_id: format!("usr_{name}"),
            username: name.into(),
            email: String::new(),
            status: "active".into(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let (symbols, users) = ([aapl()], [user("Alice")]);
        let known = Known { symbols: &symbols, users: &users };
        for (typed, known_user) in [("ALICE", true), ("alice", true), ("bob", false)] {
            let mut f = Form::place(typed, "AAPL");
            typing(&mut f, "1");
            f.validate(&known);
            assert_eq!(f.field(USER).unwrap().error.is_none(), known_user, "{typed}");
        }
    }

    #[test]
    fn bad_numbers_are_named() {
        let mut f = Form::deposit("u1", "alice");
        typing(&mut f, "-5");
        assert!(f.validate(&Known { symbols: &[], users: &[] }).is_none());
        assert_eq!(f.field(AMOUNT).unwrap().error.as_deref(), Some("must be greater than 0"));
        f.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        typing(&mut f, "ten");
        assert!(f.validate(&Known { symbols: &[], users: &[] }).is_none());
        assert_eq!(f.field(AMOUNT).unwrap().error.as_deref(), Some("not a number, e.g. 1000"));
        for typed in ["-", "1.2.3", "nan", "1 000"] {
            f.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
            typing(&mut f, typed);
            assert!(f.validate(&Known { symbols: &[], users: &[] }).is_none());
            assert_eq!(f.field(AMOUNT).unwrap().error.as_deref(), Some("not a number, e.g. 1000"), "{typed}");
        }
        for (typed, says) in [
            ("1_000", "without separators"),
            ("1,000", "without separators"),
            ("12345678901234567890.123456789012", "more digits than agt keeps"),
            // Numbers, not "not a number": what the field cannot take and why.
            ("999999999999999999999999999999", "beyond what agt keeps exactly"),
            ("1e400", "beyond what agt keeps exactly"),
            ("5.", "a decimal point needs a digit on each side"),
            ("+5", "without a plus sign"),
        ] {
            f.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
            typing(&mut f, typed);
            assert!(f.validate(&Known { symbols: &[], users: &[] }).is_none());
            let error = f.field(AMOUNT).unwrap().error.clone().unwrap();
            assert!(error.contains(says), "{typed}: {error}");
        }
    }
}
