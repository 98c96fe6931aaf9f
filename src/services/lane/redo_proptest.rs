//! Whatever mix of placements, cancels, amends and cancel-alls the lane answered, a
//! crash before its flush and the redo from the journal leave every order, account
//! and book as the lane had them, and money and assets are conserved.
use super::tests::{aapl, account, book, funded, get, order, priced};
use super::*;
use crate::api::Side;
use proptest::prelude::*;
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
enum Op {
    Place { user: usize, buy: bool, price: u8, qty: u8 },
    Cancel { pick: usize },
    Amend { pick: usize, price: Option<u8>, qty: Option<u8> },
    CancelAll { user: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, any::<bool>(), 96..=104u8, 1..=6u8).prop_map(|(user, buy, price, qty)| Op::Place { user, buy, price, qty }),
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => (any::<usize>(), proptest::option::of(96..=104u8), proptest::option::of(1..=8u8))
            .prop_map(|(pick, price, qty)| Op::Amend { pick, price, qty }),
        1 => (0..3usize).prop_map(|user| Op::CancelAll { user }),
    ]
}

const USERS: [&str; 3] = ["u0", "u1", "u2"];

/// Every order, account and the book, as the lane has them.
type Seen = (Vec<Order>, Vec<Vec<(String, Decimal, Decimal)>>, (Vec<(Decimal, Decimal)>, Vec<(Decimal, Decimal)>));

fn seen(lane: &mut Lane, ids: &[String]) -> Seen {
    let orders = ids.iter().map(|id| get(lane, id)).collect();
    (orders, USERS.iter().map(|u| account(lane, u)).collect(), book(lane))
}

fn session(batches: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let deposits: Vec<(&str, &str, &str)> = USERS.iter().flat_map(|u| [(*u, "USD", "100000"), (*u, "AAPL", "1000")]).collect();
    let (mut lane, ctx, bus) = funded(&dir, &deposits);
    let mut ids: Vec<String> = Vec::new();
    for ops in batches {
        let mut work = Work::default();
        for op in ops {
            match op {
                Op::Place { user, buy, price, qty } => {
                    let id = format!("ord_{:04}", ids.len());
                    let side = if buy { Side::Buy } else { Side::Sell };
                    let o = priced(&price.to_string(), order(&id, USERS[user], side, Decimal::from(qty), None));
                    let (reply, _) = oneshot::channel();
                    work.places.push(Placement { order: o, user_active: true, instrument: aapl(), reply });
                    ids.push(id);
                }
                Op::Cancel { pick } if !ids.is_empty() => {
                    let (reply, _) = oneshot::channel();
                    work.cancels.push(Cancel::One { order_id: ids[pick % ids.len()].clone(), owner: None, reply });
                }
                Op::Amend { pick, price, qty } if !ids.is_empty() => {
                    let (reply, _) = oneshot::channel();
                    let (price, quantity) = (price.map(Decimal::from), qty.map(Decimal::from));
                    let order_id = ids[pick % ids.len()].clone();
                    work.amends.push(Amend {
                        order_id,
                        owner: None,
                        price: price.or(quantity.is_none().then(|| dec("100"))),
                        quantity,
                        reply,
                    });
                }
                Op::CancelAll { user } => {
                    let (reply, _) = oneshot::channel();
                    work.cancels.push(Cancel::Many { user_id: Some(USERS[user].into()), symbol: None, reply });
                }
                Op::Cancel { .. } | Op::Amend { .. } => {}
            }
        }
        lane.run(work).unwrap();
    }
    while lane.cancelling_many() {
        lane.run(Work::default()).unwrap();
    }
    let live = seen(&mut lane, &ids);
    // Stopped as by a crash: what the last flush did not commit is redone.
    drop(lane);
    let mut lane = Lane::open(&ctx, None).unwrap();
    let redone = seen(&mut lane, &ids);
    prop_assert_eq!(&redone.0, &live.0, "orders");
    prop_assert_eq!(&redone.1, &live.1, "accounts");
    prop_assert_eq!(&redone.2, &live.2, "book");
    for asset in ["USD", "AAPL"] {
        let total: Decimal = redone.1.iter().flatten().filter(|(a, _, _)| a == asset).map(|(_, t, _)| *t).sum();
        prop_assert_eq!(total, if asset == "USD" { dec("300000") } else { dec("3000") }, "{} conserved", asset);
    }
    drop(lane);
    bus.shutdown();
    Ok(())
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::testing::proptest_cases(64), ..ProptestConfig::default() })]
    #[test]
    fn a_crash_redoes_placements_cancels_and_amends_as_answered(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..12)
    ) {
        session(batches)?;
    }
}
