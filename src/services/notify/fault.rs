//! A test-only fault point (read only with `debug.fault_injection = true`):
//! `AGT_FAULT_NOTIFY_OUTCOME=N` makes notify panic right after it records the N-th
//! outcome the sender reports, before the batch that holds it commits, once per process.
//! The outcome is then lost with the batch, and the sender must report it again to the
//! restarted notify (`Cmd::Due`'s `reported`), or the delivery is posted twice.

use std::sync::atomic::{AtomicBool, Ordering};

static FIRED: AtomicBool = AtomicBool::new(false);

/// The countdown to the crash, if the environment asks for one and it has not fired.
pub struct OutcomeFault {
    countdown: u64,
}

impl OutcomeFault {
    /// The fault the environment asks for, or `None` (unset, unreadable, or fired).
    pub fn from_env() -> Option<OutcomeFault> {
        let countdown = std::env::var("AGT_FAULT_NOTIFY_OUTCOME").ok()?.trim().parse().ok()?;
        (!FIRED.load(Ordering::Relaxed)).then_some(OutcomeFault { countdown })
    }

    /// Counts one recorded outcome; panics on the N-th.
    pub fn tick(fault: &mut Option<OutcomeFault>) {
        if let Some(f) = fault {
            f.countdown = f.countdown.saturating_sub(1);
            if f.countdown == 0 && !FIRED.swap(true, Ordering::Relaxed) {
                panic!("fault injection: notify stopped between recording an outcome and committing it");
            }
        }
    }
}
