//! A `config set` stopped at each of its steps (`AGT_FAULT_CONFIG_SET`): by a SIGKILL of
//! the daemon, then a start; or by a panic of the config service, then its restart. What
//! the set's record committed is kept; what it did not is undone, the file byte for byte;
//! and nothing the set kept is left beside `agt.toml`.

use crate::util::*;
use serde_json::json;
use std::time::Duration;

/// The hidden files beside `agt.toml`.
fn beside(dm: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dm.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".agt.toml"))
        .collect();
    names.sort();
    names
}

/// The announcements of `risk.max_open_orders` set to `value`.
fn announced(dm: &Daemon, value: i64) -> usize {
    dm.events("CONFIG_CHANGED").iter().filter(|e| e["data"]["key"] == "risk.max_open_orders" && e["data"]["value"] == value).count()
}

/// SIGKILLs the daemon at `step` of `config set risk.max_open_orders 77`, starts it
/// again, and answers it with the file as it was before the set.
fn killed_at(step: &str) -> (Daemon, String) {
    let mut dm = Daemon::with_config_env("", &[("AGT_FAULT_CONFIG_SET", &format!("kill:{step}"))]);
    let before = std::fs::read_to_string(dm.path().join("agt.toml")).unwrap();
    assert_ne!(dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 77);
    let out = dm.cli().args(["config", "set", "risk.max_open_orders", "77"]).timeout(Duration::from_secs(30)).output().unwrap();
    assert!(!out.status.success(), "the daemon was killed at {step}, so the set got no answer: {out:?}");
    dm.kill9(); // reaps it: the fault killed it already
    dm.env.clear();
    dm.spawn();
    (dm, before)
}

#[test]
fn a_set_killed_before_its_record_is_undone_at_the_next_start() {
    for step in ["linked", "written"] {
        let (dm, before) = killed_at(step);
        assert_ne!(dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 77, "{step}");
        assert_eq!(std::fs::read_to_string(dm.path().join("agt.toml")).unwrap(), before, "{step}: agt.toml is as it was");
        assert_eq!(announced(&dm, 77), 0, "{step}: a set never recorded is not announced either");
        if step == "written" {
            // The file as the crash left it is kept aside (an edit made since could be in it).
            assert_eq!(beside(&dm), [".agt.toml.cut-off-set"], "{step}");
            assert!(std::fs::read_to_string(dm.path().join(".agt.toml.cut-off-set")).unwrap().contains("max_open_orders = 77"));
            assert!(dm.log().contains("put back as it was before it"), "{}", dm.log());
        } else {
            assert_eq!(beside(&dm), Vec::<String>::new(), "{step}");
        }
        // The same set again goes through, once.
        dm.cli().args(["config", "set", "risk.max_open_orders", "77"]).assert().success();
        assert_eq!(announced(&dm, 77), 1, "{step}");
    }
}

#[test]
fn a_set_killed_after_its_record_is_kept_and_announced_once() {
    for step in ["recorded", "unlinked"] {
        let (mut dm, _) = killed_at(step);
        assert_eq!(dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 77, "{step}");
        assert!(std::fs::read_to_string(dm.path().join("agt.toml")).unwrap().contains("max_open_orders = 77"), "{step}");
        assert_eq!(beside(&dm), Vec::<String>::new(), "{step}");
        assert_eq!(announced(&dm, 77), 1, "{step}: announced by its record, not again by the start");
        dm.restart();
        assert_eq!(announced(&dm, 77), 1, "{step}");
    }
}

/// A panic between the write and the commit restarts only the config service: the
/// restarted service puts the file and the live setting back, and the set's caller got
/// a 503, which says nothing was stored.
#[test]
fn a_set_whose_service_panicked_before_its_record_is_undone_by_the_restart() {
    let dm = Daemon::with_config_env("", &[("AGT_FAULT_CONFIG_SET", "panic:written")]);
    let file = dm.path().join("agt.toml");
    let before = std::fs::read_to_string(&file).unwrap();
    let was = dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"].clone();
    let (s, v) = dm.req("PUT", "/api/config", Some(json!({"risk.max_open_orders": 77})));
    assert_eq!(s, 503, "{v}");
    let now = wait_until("the config service's restart", Duration::from_secs(10), || {
        let services = dm.ok("GET", "/api/services", None);
        let config = services.as_array().unwrap().iter().find(|s| s["name"] == "config").unwrap().clone();
        let restarted = config["restarts"].as_u64() >= Some(1) && config["state"] == "running";
        restarted.then(|| dm.ok("GET", "/api/config", None))
    });
    assert_eq!(now["risk"]["max_open_orders"], was, "{now}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "agt.toml is as it was");
    assert_eq!(beside(&dm), [".agt.toml.cut-off-set"]);
    assert_eq!(announced(&dm, 77), 0);
    // The fault fires once: the same set now goes through, and is kept.
    assert_eq!(dm.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 77})))["risk"]["max_open_orders"], 77);
    assert!(std::fs::read_to_string(&file).unwrap().contains("max_open_orders = 77"));
    assert_eq!(announced(&dm, 77), 1);
}
