//! Criterion benches of each store's batched commit (work in progress).
fn main() {}
