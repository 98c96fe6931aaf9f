//! The orders service: order records and their lifecycle, and the placement saga.
//!
//! The actor ([`service`]) owns `data/orders.db`: every order, its fills, and the stage
//! its saga has reached. The saga ([`saga`]) runs in async code and walks an order
//! through the other services — accept here, reserve in risk, match in trading, settle in
//! risk, record here — each step idempotent, so [`saga::recover`] can replay any step a
//! crash interrupted. This file is the **message contract**.

mod events;
pub mod saga;
mod service;

pub(crate) use service::matched;
pub use service::Orders;

use crate::api::{Order, OrderStatus, OrderType, Side, TimeInForce};
use crate::services::actor::Reply;
use crate::services::trading::{Cancelled, MatchResult};
use rust_decimal::Decimal;

pub enum Cmd {
    /// Stores a new order at stage `accepted`; a repeated `client_order_id` of the same
    /// user answers the first order instead (`Accepted::Existing`).
    Accept {
        order: NewOrder,
        reply: Reply<Accepted>,
    },
    /// A risk rejection (or an abort): status `rejected` with its reason.
    Reject {
        order_id: String,
        code: String,
        message: String,
        reply: Reply<Order>,
    },
    /// The match outcome of a placement's taker and its makers' fills (recovery's step).
    /// `settled`: risk has committed the settlement already, so a placement's saga ends
    /// here (otherwise it waits in `settling` for [`Cmd::Settled`]).
    Record {
        result: MatchResult,
        settled: bool,
        reply: Reply<Order>,
    },
    /// Risk has settled a recorded placement: its saga is done (no reply).
    Settled {
        order_id: String,
    },
    /// Orders taken out of the book by a cancel.
    Cancelled {
        cancelled: Vec<Cancelled>,
        reply: Reply<Vec<Order>>,
    },
    Get {
        order_id: String,
        reply: Reply<Order>,
    },
    List {
        filter: ListFilter,
        reply: Reply<Vec<Order>>,
    },
    /// Orders whose saga did not finish (for recovery).
    Unfinished(Reply<Vec<Order>>),
    /// Answered once everything the lane acknowledged before it is committed and its
    /// events handed to the bus (placements are answered before their record commits;
    /// see `services::lane`).
    Sync(Reply<()>),
}

impl Cmd {
    /// Whether the command only reads. The lane answers a batch of reads at once from
    /// its open transactions instead of flushing first (see `services::lane`).
    pub fn is_read(&self) -> bool {
        matches!(self, Cmd::Get { .. } | Cmd::List { .. } | Cmd::Unfinished(_))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewOrder {
    pub order_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub kind: OrderType,
    pub time_in_force: TimeInForce,
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    pub price: Option<Decimal>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub quantity: Decimal,
    pub client_order_id: Option<String>,
}

pub enum Accepted {
    New(Order),
    Existing(Order),
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub symbol: Option<String>,
    /// `None` or empty = every status; otherwise only these.
    pub statuses: Vec<OrderStatus>,
    pub limit: usize,
}
