//! The CLI without a daemon: usage errors (exit 2), an unreachable daemon (exit 3 with a
//! hint), and the commands that need no daemon at all.

use assert_cmd::Command;
use predicates::prelude::*;

/// `agt` with a clean environment: no client settings leak in from the caller's shell.
fn agt(home: &tempfile::TempDir) -> Command {
    let mut cmd = Command::cargo_bin("agt").expect("the agt binary is built");
    for var in ["AGT_URL", "AGT_TOKEN", "AGT_SOCKET", "AGT_OUTPUT", "AGT_HTTP_ADDR"] {
        cmd.env_remove(var);
    }
    cmd.env("AGT_HOME", home.path()).env("NO_COLOR", "1");
    cmd
}

fn home() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary home")
}

#[test]
fn usage_errors_exit_2() {
    let h = home();
    for args in [
        &["no-such-command"][..],
        &["order", "place"],
        &["user", "deposit", "x", "USD"],
        &["-o", "yaml", "health"],
        &["order", "place", "u", "AAPL", "hold", "1"],
        &["order", "place", "u", "AAPL", "buy", "1", "--type", "limit"],
        &["order", "amend", "some-id"],
        &["user", "update", "someone"],
        &["token", "create", "--role", "root"],
        &["events", "tail", "--since", "abc"],
        &["--url", "https://example.com", "health"],
    ] {
        agt(&h).args(args).assert().code(2).stderr(predicate::str::is_empty().not());
    }
}

#[test]
fn daemon_start_and_stop_refuse_a_remote_url_and_stop_answers_json() {
    let h = home();
    // They act on this machine's daemon: a --url (here, or in AGT_URL) is not ignored.
    for verb in ["start", "stop"] {
        agt(&h)
            .args(["--url", "http://127.0.0.1:1", "daemon", verb])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!("agt daemon {verb} acts on the daemon of this machine's home")));
        agt(&h).env("AGT_URL", "http://127.0.0.1:1").args(["daemon", verb]).assert().code(2);
    }
    let out = agt(&h).args(["-o", "json", "daemon", "stop"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!((v["running"].as_bool(), v["stopped"].as_bool()), (Some(false), Some(false)), "{v}");
}

#[test]
fn no_daemon_exits_3_with_a_hint() {
    let h = home();
    for args in [&["health"][..], &["user", "list"], &["-o", "json", "order", "list"], &["events", "tail"]] {
        agt(&h).args(args).assert().code(3).stderr(predicate::str::contains("daemon start"));
    }
    // --home given explicitly, with the environment pointing elsewhere.
    let other = home();
    agt(&other).arg("--home").arg(h.path()).arg("health").assert().code(3).stderr(predicate::str::contains("daemon"));
}

#[test]
fn unreachable_url_exits_3() {
    let h = home();
    agt(&h).args(["--url", "http://127.0.0.1:1", "--token", "x", "health"]).assert().code(3).stderr(predicate::str::contains("daemon"));
    agt(&h).env("AGT_URL", "http://127.0.0.1:1").env("AGT_TOKEN", "x").args(["user", "list"]).assert().code(3);
}

/// A token an HTTP header cannot carry is a usage error (exit 2) that names the token, not
/// the URL: it was "invalid daemon URL …: the token has characters a header cannot carry".
/// Refused before any connection is tried (here to a port nobody listens on), and not echoed.
#[test]
fn a_malformed_token_is_a_usage_error_that_names_the_token() {
    let h = home();
    for token in ["agt_\x01x", "agt_x\ny", "agt_\x1b[0m"] {
        let out = agt(&h).args(["--url", "http://127.0.0.1:1", "--token", token, "health"]).assert().code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("invalid token (--token or AGT_TOKEN)") && stderr.contains("agt token create"), "{stderr}");
        assert!(!stderr.contains("URL") && !stderr.contains(token), "{stderr}");
    }
    agt(&h).env("AGT_URL", "http://127.0.0.1:1").env("AGT_TOKEN", "agt_\x01x").args(["user", "list"]).assert().code(2);
}

#[test]
fn a_socket_nobody_listens_on_exits_3() {
    let h = home();
    let sock = h.path().join("dead.sock");
    // Bound and dropped: the file stays, nobody accepts.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    agt(&h).arg("--socket").arg(&sock).arg("health").assert().code(3);
}

#[test]
fn daemon_status_and_stop_without_a_daemon() {
    let h = home();
    agt(&h).args(["daemon", "status"]).assert().code(3).stderr(predicate::str::contains("not running"));
    agt(&h).args(["-o", "json", "daemon", "status"]).assert().code(3).stdout(predicate::str::contains("\"running\":false"));
    // Stopping nothing is not an error: scripts may stop unconditionally.
    agt(&h).args(["daemon", "stop"]).assert().success().stdout(predicate::str::contains("not running"));
}

#[test]
fn daemon_stop_ignores_a_stale_pid() {
    let h = home();
    // A live process that is not an agt daemon must not be signalled.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(h.path().join("agtd.pid"), other.id().to_string()).unwrap();
    agt(&h).args(["daemon", "stop"]).assert().success().stdout(predicate::str::contains("not running"));
    assert!(other.try_wait().unwrap().is_none(), "daemon stop signalled an unrelated process");
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn completions_need_no_daemon() {
    let h = home();
    for shell in ["bash", "zsh", "fish"] {
        agt(&h).args(["completions", shell]).assert().success().stdout(predicate::str::contains("agt"));
    }
    agt(&h).args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn help_and_version() {
    let h = home();
    agt(&h).arg("--help").assert().success().stdout(predicate::str::contains("daemon"));
    agt(&h).arg("--version").assert().success().stdout(predicate::str::contains("agt"));
    agt(&h).args(["order", "place", "--help"]).assert().success().stdout(predicate::str::contains("--client-id"));
}

/// With HOME and XDG_DATA_HOME unset (cron, `env -i`), the default home is under the
/// passwd entry's home directory, never under the folder the command runs in.
#[test]
fn without_home_in_the_environment_the_default_home_comes_from_passwd() {
    let cwd = home();
    // SAFETY: getpwuid's answer is read at once, on this thread.
    let passwd_home = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null(), "the test user has a passwd entry");
        std::ffi::CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned()
    };
    let out = Command::cargo_bin("agt").unwrap().env_clear().current_dir(cwd.path()).args(["daemon", "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let want = std::path::Path::new(&passwd_home).join(".local/share/agt");
    assert!(err.contains(&format!("home {}", want.display())), "{err}");
    assert!(!err.contains(&cwd.path().display().to_string()), "a home under the working folder: {err}");
    assert!(!cwd.path().join(".local").exists());
}

/// A count too large for the CLI to hold (`--limit`, `--depth`) is refused before any
/// request, as too large, naming the most the daemon gives: clap's own message claimed
/// "not in 0..=4294967295", a range the daemon takes at neither end (0 is refused, and a
/// list gives at most 10000). Found by `scripts/cli-fuzz.py`.
#[test]
fn a_count_past_its_range_is_too_large_not_out_of_a_range_the_daemon_never_takes() {
    let h = home();
    for (args, most) in [
        (&["order", "list", "--limit"][..], "10000"),
        (&["trades", "AAPL", "--limit"], "10000"),
        (&["market", "candles", "AAPL", "--limit"], "10000"),
        (&["notify", "list", "--limit"], "10000"),
        (&["audit", "tail", "--limit"], "100000"),
        (&["book", "AAPL", "--depth"], "1000"),
    ] {
        let out = agt(&h).args(args).arg("99999999999").assert().code(2).get_output().stderr.clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains(&format!("99999999999 is too large: {most} is the most it gives")), "{args:?}: {err}");
        assert!(!err.contains("4294967295"), "{args:?}: {err}");
        let out = agt(&h).args(args).arg("ten").assert().code(2).get_output().stderr.clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains(r#""ten" is not a whole number of 1 or more"#), "{args:?}: {err}");
    }
    // One that fits goes to the daemon as typed (here none runs: exit 3), past the most
    // included, so that the daemon refuses it in its own words.
    agt(&h).args(["order", "list", "--limit", "20000"]).assert().code(3);
}

/// `--timeout` of `daemon start` and `stop` is 1 s to a day: 0 could only fail, and a
/// count past the clock's range panicked (exit 101) adding it to the time.
#[test]
fn daemon_start_and_stop_timeouts_are_a_second_to_a_day() {
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (["daemon", "start", "--timeout", "0"], "wait at least 1 second"),
        (["daemon", "stop", "--timeout", "0"], "wait at least 1 second"),
        (["daemon", "start", "--timeout", "18446744073709551615"], "86400 (a day) is the most it waits"),
        (["daemon", "stop", "--timeout", "99999999999999999999999"], "86400 (a day) is the most it waits"),
        (["daemon", "stop", "--timeout", "1.5"], "not a whole number of seconds"),
    ] {
        let out = crate::util::cli_at(home.path()).args(args).timeout(std::time::Duration::from_secs(30)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!home.path().join("agtd.json").exists(), "nothing was started");
}

/// A negative number given to a numeric option reaches its parser, which says what the
/// option takes: clap read `--limit -1` as an unknown flag `-1` ("unexpected argument '-1'
/// found"), and for `agt trades AAPL --limit -1` suggested `-- -1`, which would only have
/// made `-1` a second symbol. `--since abc` and `bench --orders -1` said "invalid digit
/// found in string", naming neither the option's range nor what was wrong.
#[test]
fn a_negative_or_non_numeric_count_says_what_the_option_takes() {
    let h = home();
    for (args, says) in [
        (&["book", "AAPL", "--depth", "-1"][..], r#""-1" is not a whole number of 1 or more"#),
        (&["trades", "AAPL", "--limit", "-1"], r#""-1" is not a whole number of 1 or more"#),
        (&["market", "candles", "AAPL", "--limit", "-2"], r#""-2" is not a whole number of 1 or more"#),
        (&["order", "list", "--limit", "-5"], r#""-5" is not a whole number of 1 or more"#),
        (&["notify", "list", "--limit", "-1"], r#""-1" is not a whole number of 1 or more"#),
        (&["audit", "tail", "--limit", "-1"], r#""-1" is not a whole number of 1 or more"#),
        // 0 too: no daemon takes a count of nothing (it was refused by the daemon, exit 1).
        (&["book", "AAPL", "--depth", "0"], "0 is too small: 1 is the fewest it gives, 1000 the most"),
        (&["trades", "AAPL", "--limit", "0"], "0 is too small: 1 is the fewest it gives, 10000 the most"),
        (&["market", "candles", "AAPL", "--limit", "00"], "00 is too small: 1 is the fewest it gives, 10000 the most"),
        (&["order", "list", "--limit", "0"], "0 is too small: 1 is the fewest it gives, 10000 the most"),
        (&["notify", "list", "--limit", "0"], "0 is too small: 1 is the fewest it gives, 10000 the most"),
        (&["audit", "tail", "--limit", "0"], "0 is too small: 1 is the fewest it gives, 100000 the most"),
        (&["audit", "tail", "--since", "-1"], r#"a sequence number is a whole number of 0 or more; got "-1""#),
        (&["events", "tail", "--since", "-1"], r#"a sequence number is a whole number of 0 or more; got "-1""#),
        (&["events", "tail", "--since", "abc"], r#"a sequence number is a whole number of 0 or more; got "abc""#),
        (&["events", "tail", "--since", "99999999999999999999999"], "is too large: 18446744073709551615 is the most it takes"),
        (&["demo", "--users", "-1"], "-1 is not in 1..=100"),
        (&["demo", "--rate", "-1"], r#"a number > 0 and <= 100000, got "-1""#),
        (&["demo", "--duration", "-1"], r#""-1" is out of range"#),
        (&["bench", "--orders", "-1"], r#"--orders is a whole number from 1 to 100000000; got "-1""#),
        (&["bench", "--orders", "0"], "--orders is a whole number from 1 to 100000000; got 0"),
        (&["bench", "--concurrency", "ten"], r#"--concurrency is a whole number from 1 to 4096; got "ten""#),
        (&["bench", "--cancels", "101"], "101 is too large: 100 is the most it takes"),
        (&["bench", "--seed", "-4"], r#"--seed is a whole number of 0 or more; got "-4""#),
        (&["daemon", "stop", "--timeout", "-1"], r#""-1" is not a whole number of seconds"#),
    ] {
        let out = agt(&h).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument") && !err.contains("invalid digit"), "{args:?}: {err}");
    }
    // A count that fits still goes to the daemon (none runs here: exit 3).
    agt(&h).args(["events", "tail", "--since", "0"]).assert().code(3);
}

/// A well-formed command that fails on this machine (not the command line's fault) exits
/// 1 with the reason, not 2: a script retrying on 2 would retry a typo (README, exit codes).
#[test]
fn a_file_to_import_that_cannot_be_read_exits_1_naming_it() {
    let h = home();
    let missing = h.path().join("no-such-bars.csv");
    agt(&h)
        .args(["market", "import"])
        .arg(&missing)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("cannot read {}", missing.display())));
}
