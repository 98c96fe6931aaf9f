//! Logs: the daily files are kept `log.keep_days` days; a detached daemon's
//! `logs/daemon.out` gets only warnings and errors, and is set aside once it is big.

use crate::util::*;
use chrono::{Days, Utc};
use predicates::prelude::PredicateBooleanExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Daily files from before `log.keep_days` are deleted when the daemon starts and when
/// the key is lowered; files not named like a daily file are never touched.
#[test]
fn daily_log_files_older_than_keep_days_are_deleted_and_other_files_kept() {
    let mut d = Daemon::unstarted("[log]\nkeep_days = 2\n", &[]);
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // The daemon dates its files in UTC. (A test run across midnight UTC could see the
    // daemon a day ahead; keep_days = 2 then also deletes `yesterday`.)
    let today = Utc::now().date_naive();
    let daily = |back: u64| format!("agtd.log.{}", today - Days::new(back));
    let unrelated = ["notes.txt".to_string(), format!("{}.gz", daily(30)), "agtd.log.bak".to_string()];
    for name in [daily(30), daily(2), daily(1)].iter().chain(&unrelated) {
        std::fs::write(logs.join(name), "an old line\n").unwrap();
    }
    d.spawn();

    let mut kept: Vec<String> = [daily(1), daily(0)].into_iter().chain(unrelated.iter().cloned()).collect();
    kept.sort();
    assert_eq!(names(&logs), kept, "two days kept: today's (the daemon's own) and yesterday's");
    let todays = logs.join(daily(0));
    wait_until("the deletion to be logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&todays).unwrap().contains("deleted daily log files older than log.keep_days").then_some(())
    });

    // Lowered while the daemon runs: yesterday's file goes within the daemon's tick.
    d.cli().args(["config", "set", "log.keep_days", "1"]).assert().success().stdout(predicates::str::contains("next starts").not());
    wait_until("yesterday's file to go", Duration::from_secs(10), || (!logs.join(daily(1)).exists()).then_some(()));
    let mut kept: Vec<String> = [daily(0)].into_iter().chain(unrelated.iter().cloned()).collect();
    kept.sort();
    assert_eq!(names(&logs), kept);
    assert!(std::fs::read_to_string(d.path().join("agt.toml")).unwrap().contains("keep_days = 1"));

    // A bad value says what to write, and changes nothing.
    d.cli()
        .args(["config", "set", "log.keep_days", "-1"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("log.keep_days: expected a whole number >= 0, got -1"));
    // Too large for the key: the message names the largest it takes.
    d.cli()
        .args(["config", "set", "log.keep_days", "4294967296"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("log.keep_days: expected a whole number from 0 to 4294967295, got 4294967296"));
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"log.keep_days": "two weeks"})));
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains(r#"log.keep_days: expected a whole number >= 0, got "two weeks""#), "{e}");
    d.cli().args(["config", "get", "log.keep_days"]).assert().success().stdout("1\n");
    assert!(d.stop().success());
}

/// A home for `agt daemon start`, whose daemon is stopped when the test ends, passed or not.
struct Detached {
    home: tempfile::TempDir,
}

impl Detached {
    fn new(extra: &str) -> Detached {
        let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
        std::fs::write(home.path().join("agt.toml"), format!("{BASE_CONFIG}\n{extra}\n")).unwrap();
        Detached { home }
    }

    fn agt(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = cli_at(self.home.path());
        c.args(args);
        c
    }

    fn logs(&self) -> PathBuf {
        self.home.path().join("logs")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs().join(name)).unwrap_or_default()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = self.agt(&["daemon", "stop"]).output();
    }
}

/// `agt daemon start`: the whole log goes to the daily file, and `daemon.out` gets only
/// the warnings; `agt daemon run` in the foreground keeps the whole log on stderr (for
/// a terminal, or systemd's journal).
#[test]
fn a_detached_daemon_prints_only_warnings_and_a_foreground_one_the_whole_log() {
    // A webhook secret in a file others can read: a warning at every start.
    const WARNING: &str = "holds webhook secrets and others can read it";
    let hook = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"TRADE_EXECUTED\"]\nsecret = \"s3cret\"\n";
    let h = Detached::new(hook);
    h.agt(&["daemon", "start"]).assert().success();
    let today = format!("agtd.log.{}", Utc::now().date_naive());
    wait_until("the start in the daily file", Duration::from_secs(10), || {
        let daily = h.read(&today);
        (daily.contains("agt daemon started") && daily.contains(WARNING)).then_some(())
    });
    h.agt(&["daemon", "stop"]).assert().success();
    let out = h.read("daemon.out");
    assert!(out.contains(WARNING), "the warning is in daemon.out: {out}");
    assert!(!out.contains("agt daemon started") && !out.contains("INFO"), "no info lines in daemon.out: {out}");
    assert!(h.read(&today).contains("agt daemon stopped"));

    let d = Daemon::with_config(hook);
    assert!(d.log().contains(WARNING) && d.log().contains("agt daemon started"), "{}", d.log());
}

/// `agt daemon start` sets a `daemon.out` of 8 MiB or more aside as `daemon.out.1`
/// (replacing the older one) and appends to a smaller one.
#[test]
fn daemon_start_sets_a_full_daemon_out_aside() {
    const LIMIT: usize = 8 * 1024 * 1024;
    let h = Detached::new("");
    std::fs::create_dir_all(h.logs()).unwrap();
    let filled = |first: &str, size: usize| {
        let mut text = format!("{first}\n").into_bytes();
        text.resize(size, b'.');
        std::fs::write(h.logs().join("daemon.out"), text).unwrap();
    };
    std::fs::write(h.logs().join("daemon.out.1"), "the oldest run\n").unwrap();
    filled("a full run", LIMIT);
    h.agt(&["daemon", "start"]).assert().success();
    h.agt(&["daemon", "stop"]).assert().success();
    let aside = std::fs::metadata(h.logs().join("daemon.out.1")).unwrap().len();
    assert_eq!(aside, LIMIT as u64, "the full file was set aside, replacing the oldest");
    assert!(h.read("daemon.out.1").starts_with("a full run\n"));
    assert!(!h.read("daemon.out").contains("a full run"), "the start wrote to a new daemon.out");

    filled("a run just under the limit", LIMIT - 1);
    h.agt(&["daemon", "start"]).assert().success();
    h.agt(&["daemon", "stop"]).assert().success();
    assert!(h.read("daemon.out").starts_with("a run just under the limit\n"), "appended to, not set aside");
    assert!(h.read("daemon.out.1").starts_with("a full run\n"));
}
