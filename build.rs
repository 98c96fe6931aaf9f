//! Names the build: `AGT_COMMIT`, the commit agt was built from (`git rev-parse
//! --short=7 HEAD`), or `unknown` outside a git checkout or without git.
//!
//! Every build says `0.1.0` until a release bumps it, so the version alone cannot tell an
//! operator whether the daemon still runs the agt they replaced: `agt --version`,
//! `/health`, `agtd.json` and `agt daemon status` carry the commit too
//! (`daemon::BUILD`), and `agt daemon status` says when the daemon's differs from its own.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AGT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    // Run again when HEAD moves: HEAD itself (another branch checked out), the branch it
    // names (a commit) and the packed refs. Only files that exist: cargo runs a build
    // script whose watched file is missing on every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
