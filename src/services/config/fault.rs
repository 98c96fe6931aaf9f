//! A test-only fault point (armed only with `debug.fault_injection = true`):
//! `AGT_FAULT_CONFIG_SET=<how>:<step>` stops the first `config set` of the process at
//! `step`, `how` being `kill` (SIGKILL of the whole daemon, as a crash or the OOM killer
//! would) or `panic` (the config service's thread only; the supervisor restarts it).
//! The steps, in the order a set takes them:
//!
//! - `linked`: the replaced file is kept beside it, the new one not renamed in yet;
//! - `written`: the new file is in place, its record not committed;
//! - `recorded`: the record committed, the kept file not removed, nothing answered;
//! - `unlinked`: the kept file removed, nothing answered.
//!
//! Each must end as the set's record says: undone before `recorded`, kept from it on
//! (`super::cut_off`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    Linked,
    Written,
    Recorded,
    Unlinked,
}

#[derive(Clone, Copy, Debug)]
enum How {
    Kill,
    Panic,
}

static ARMED: OnceLock<Option<(How, Step)>> = OnceLock::new();
static FIRED: AtomicBool = AtomicBool::new(false);

/// Reads the environment once per process, if fault injection is on.
pub fn arm(fault_injection: bool) {
    ARMED.get_or_init(|| if fault_injection { parse(&std::env::var("AGT_FAULT_CONFIG_SET").ok()?) } else { None });
}

fn parse(text: &str) -> Option<(How, Step)> {
    let (how, step) = text.trim().split_once(':')?;
    let how = match how {
        "kill" => How::Kill,
        "panic" => How::Panic,
        _ => return None,
    };
    let step = match step {
        "linked" => Step::Linked,
        "written" => Step::Written,
        "recorded" => Step::Recorded,
        "unlinked" => Step::Unlinked,
        _ => return None,
    };
    Some((how, step))
}

/// A set has reached `step`: stops here if armed for it (once).
pub fn at(step: Step) {
    let Some(Some((how, armed))) = ARMED.get() else { return };
    if *armed != step || FIRED.swap(true, Ordering::Relaxed) {
        return;
    }
    match how {
        How::Panic => panic!("fault injection: a config set stopped at {step:?}"),
        How::Kill => {
            // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, nothing runs after it.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            loop {
                std::thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_how_and_step_and_nothing_else() {
        assert!(matches!(parse("kill:written"), Some((How::Kill, Step::Written))));
        assert!(matches!(parse("panic:linked"), Some((How::Panic, Step::Linked))));
        assert!(parse("written").is_none());
        assert!(parse("kill:later").is_none());
        assert!(parse("stop:written").is_none());
    }
}
