//! Shared by the unit tests only.

/// How many cases a property test runs: `PROPTEST_CASES` when it is set, else the test's
/// own `default`. A test that names its count in `ProptestConfig` ignores the variable
/// (proptest reads it only into its default config), and the money proptests find their
/// rarest holes only at thousands of cases (session 46's two supply-room holes came from
/// 4,000), so a deep run must be able to raise every count without editing code:
/// `PROPTEST_CASES=5000 cargo test --release --lib -- ledger_properties redo_proptest
/// engine::tests::random` (README, "Quickstart"). CI runs the defaults.
pub(crate) fn proptest_cases(default: u32) -> u32 {
    cases_from(std::env::var("PROPTEST_CASES").ok().as_deref(), default)
}

/// The variable's value as a count, or `default` when it is unset; a value that is not a
/// positive count is a mistake in the command, so the test stops and says so.
fn cases_from(var: Option<&str>, default: u32) -> u32 {
    match var {
        None => default,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("PROPTEST_CASES={v:?}: expected a count of cases, 1 or more"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_overrides_a_tests_own_count_either_way() {
        assert_eq!(cases_from(None, 64), 64);
        assert_eq!(cases_from(Some("5000"), 64), 5000);
        assert_eq!(cases_from(Some("8"), 512), 8);
    }

    #[test]
    #[should_panic(expected = "expected a count of cases")]
    fn a_count_that_is_not_one_is_refused() {
        cases_from(Some("many"), 64);
    }
}
