//! The data of the orders service's events (`ORDER_*`), encoded straight to JSON text by
//! `AfterCommit::event_of`: building a `serde_json::Value` map for each of an order's
//! ~4 events, encoding it and dropping it was ~10 % of the trading lane's CPU.
//!
//! Fields are declared in alphabetical order, the order `json!` maps wrote them in, so
//! the text (and what the audit chain hashes) reads as it did.

use crate::api::{Order, OrderStatus, OrderType, Side};
use rust_decimal::Decimal;
use serde::Serialize;

/// An order as its events describe it, with what some events add.
#[derive(Serialize)]
pub(super) struct OrderEvent<'a> {
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    average_price: Option<Decimal>,
    /// `ORDER_REJECTED`: the reason's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    /// A maker's `ORDER_EXECUTED`: this fill's quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    fill_quantity: Option<Decimal>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    filled_quantity: Decimal,
    order_id: &'a str,
    /// The order's limit price, or in a maker's `ORDER_EXECUTED` the fill's price.
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    price: Option<Decimal>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    quantity: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'a str>,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    remaining_quantity: Decimal,
    side: Side,
    status: OrderStatus,
    symbol: &'a str,
    /// A maker's `ORDER_EXECUTED`: the trade.
    #[serde(skip_serializing_if = "Option::is_none")]
    trade_id: Option<&'a str>,
    /// A taker's `ORDER_EXECUTED`: the trades of this match.
    #[serde(skip_serializing_if = "Option::is_none")]
    trades: Option<&'a [TradeRef<'a>]>,
    #[serde(rename = "type")]
    kind: OrderType,
    user_id: &'a str,
}

/// One trade of a taker's `ORDER_EXECUTED`.
#[derive(Serialize)]
pub(super) struct TradeRef<'a> {
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub price: Decimal,
    #[serde(serialize_with = "crate::api::decimal::ser")]
    pub quantity: Decimal,
    pub trade_id: &'a str,
}

/// `ORDER_STATUS_UPDATED`.
#[derive(Serialize)]
pub(super) struct StatusChange<'a> {
    from: OrderStatus,
    order_id: &'a str,
    /// An amend: the new limit price (the status may stay as it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    price: Option<Decimal>,
    /// An amend: the new total quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    quantity: Option<Decimal>,
    /// An amend: what is left to fill at the new terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::api::decimal::ser_opt")]
    remaining_quantity: Option<Decimal>,
    to: OrderStatus,
    user_id: &'a str,
}

impl<'a> OrderEvent<'a> {
    /// `ORDER_CREATED`, `ORDER_CANCELLED`: the order as it stands.
    pub fn of(o: &'a Order) -> Self {
        OrderEvent {
            average_price: o.average_price,
            code: None,
            fill_quantity: None,
            filled_quantity: o.filled_quantity,
            order_id: &o.order_id,
            price: o.price,
            quantity: o.quantity,
            reject_reason: None,
            remaining_quantity: o.remaining_quantity,
            side: o.side,
            status: o.status,
            symbol: &o.symbol,
            trade_id: None,
            trades: None,
            kind: o.kind,
            user_id: &o.user_id,
        }
    }

    /// A maker's `ORDER_EXECUTED`: the order after one fill, at that fill's price.
    pub fn maker_fill(o: &'a Order, trade_id: &'a str, price: Decimal, quantity: Decimal) -> Self {
        OrderEvent { trade_id: Some(trade_id), price: Some(price), fill_quantity: Some(quantity), ..Self::of(o) }
    }

    /// A taker's `ORDER_EXECUTED`: the order after the trades of its match.
    pub fn taker_fills(o: &'a Order, trades: &'a [TradeRef<'a>]) -> Self {
        OrderEvent { trades: Some(trades), ..Self::of(o) }
    }

    /// `ORDER_REJECTED`.
    pub fn rejected(o: &'a Order, code: &'a str) -> Self {
        OrderEvent { reject_reason: o.reject_reason.as_deref(), code: Some(code), ..Self::of(o) }
    }
}

impl<'a> StatusChange<'a> {
    pub fn of(o: &'a Order, from: OrderStatus) -> Self {
        StatusChange {
            from,
            order_id: &o.order_id,
            price: None,
            quantity: None,
            remaining_quantity: None,
            to: o.status,
            user_id: &o.user_id,
        }
    }

    /// An amend's change: the new terms, and the status it left the order in.
    pub fn amended(o: &'a Order, from: OrderStatus) -> Self {
        StatusChange { price: o.price, quantity: Some(o.quantity), remaining_quantity: Some(o.remaining_quantity), ..Self::of(o, from) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Order {
        serde_json::from_value(json!({
            "order_id": "ord_1", "user_id": "usr_1", "symbol": "AAPL", "side": "buy", "type": "limit",
            "time_in_force": "gtc", "price": "101.5", "quantity": "10", "filled_quantity": "4",
            "remaining_quantity": "6", "average_price": "101.25", "status": "partially_filled", "fills": [],
            "client_order_id": null, "created_at": "t0", "updated_at": "t1", "reject_reason": "why: because"
        }))
        .unwrap()
    }

    /// What `json!` wrote before, key for key and byte for byte.
    fn summary(o: &Order) -> serde_json::Value {
        json!({
            "order_id": o.order_id, "user_id": o.user_id, "symbol": o.symbol, "side": o.side,
            "type": o.kind, "price": o.price, "quantity": o.quantity, "filled_quantity": o.filled_quantity,
            "remaining_quantity": o.remaining_quantity, "average_price": o.average_price, "status": o.status,
        })
    }

    fn text(data: impl Serialize) -> String {
        serde_json::to_string(&data).unwrap()
    }

    #[test]
    fn each_event_encodes_as_its_json_map_did() {
        let o = order();
        assert_eq!(text(OrderEvent::of(&o)), summary(&o).to_string());

        let mut maker = summary(&o);
        maker["trade_id"] = json!("trd_1");
        maker["price"] = json!(Decimal::new(1005, 1));
        maker["fill_quantity"] = json!(Decimal::new(2, 0));
        assert_eq!(text(OrderEvent::maker_fill(&o, "trd_1", Decimal::new(1005, 1), Decimal::new(2, 0))), maker.to_string());

        let trades = [TradeRef { price: Decimal::new(101, 0), quantity: Decimal::new(4, 0), trade_id: "trd_2" }];
        let mut taker = summary(&o);
        taker["trades"] = json!([{"trade_id": "trd_2", "price": Decimal::new(101, 0), "quantity": Decimal::new(4, 0)}]);
        assert_eq!(text(OrderEvent::taker_fills(&o, &trades)), taker.to_string());

        let mut rejected = summary(&o);
        rejected["reject_reason"] = json!(o.reject_reason);
        rejected["code"] = json!("insufficient_funds");
        assert_eq!(text(OrderEvent::rejected(&o, "insufficient_funds")), rejected.to_string());

        let market = Order { price: None, average_price: None, kind: OrderType::Market, ..o.clone() };
        assert_eq!(text(OrderEvent::of(&market)), summary(&market).to_string());

        let change = json!({"order_id": o.order_id, "user_id": o.user_id, "from": OrderStatus::New, "to": o.status});
        assert_eq!(text(StatusChange::of(&o, OrderStatus::New)), change.to_string());

        let amended = json!({"order_id": o.order_id, "user_id": o.user_id, "from": OrderStatus::New, "to": o.status,
            "price": o.price, "quantity": o.quantity, "remaining_quantity": o.remaining_quantity});
        assert_eq!(text(StatusChange::amended(&o, OrderStatus::New)), amended.to_string());
    }
}
