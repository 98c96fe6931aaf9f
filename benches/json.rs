//! JSON text of an order's event: serde_json's writer against `agt::api::json`, which
//! writes the same bytes (its tests compare the two) but checks a string for characters
//! to escape eight bytes at a time instead of one (BENCHMARKS.md, session 41).
//!
//! The event is shaped like the order path's `ORDER_EXECUTED`: eleven fields, decimals
//! as strings, ids, a time. Run: `cargo bench --bench json -- --quick`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rust_decimal::Decimal;

#[derive(serde::Serialize)]
struct Event<'a> {
    #[serde(serialize_with = "agt::api::decimal::ser_opt")]
    average_price: Option<Decimal>,
    #[serde(serialize_with = "agt::api::decimal::ser")]
    filled_quantity: Decimal,
    order_id: &'a str,
    #[serde(serialize_with = "agt::api::decimal::ser_opt")]
    price: Option<Decimal>,
    #[serde(serialize_with = "agt::api::decimal::ser")]
    quantity: Decimal,
    side: &'a str,
    status: &'a str,
    symbol: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    user_id: &'a str,
    updated_at: &'a str,
}

fn event() -> Event<'static> {
    Event {
        average_price: Some("101.25".parse().unwrap()),
        filled_quantity: "3".parse().unwrap(),
        order_id: "0193a4f2-7c1e-7b3a-9d2e-5f6a7b8c9d0e",
        price: Some("101.5".parse().unwrap()),
        quantity: "10".parse().unwrap(),
        side: "buy",
        status: "partially_filled",
        symbol: "BTC-USD",
        kind: "limit",
        user_id: "0193a4f2-7c1e-7b3a-9d2e-5f6a7b8c9d0f",
        updated_at: "2026-12-07T01:02:03.123456Z",
    }
}

fn writers(c: &mut Criterion) {
    let e = event();
    let mut ours = Vec::new();
    agt::api::json::write(&mut ours, &e).unwrap();
    assert_eq!(ours, serde_json::to_vec(&e).unwrap(), "the two writers must agree");
    let mut group = c.benchmark_group("order_event_json");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1024);
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&e)).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("agt_json", |b| {
        b.iter(|| {
            buf.clear();
            agt::api::json::write(&mut buf, black_box(&e)).unwrap();
            black_box(buf.len())
        })
    });
    group.finish();
}

criterion_group!(benches, writers);
criterion_main!(benches);
