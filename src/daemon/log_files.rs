//! The daemon's daily log files, `logs/agtd.log.YYYY-MM-DD`, and how long they are kept
//! (`log.keep_days`).
//!
//! tracing-appender writes them and begins a new one on the first line after midnight
//! UTC (it dates them in UTC). Deleting old ones is done here rather than with its
//! `max_log_files`, which keeps a number of files, oldest by creation time first, among
//! every file whose name merely starts with `agtd.log`: an operator's
//! `agtd.log.2024-05-01.gz` or `agtd.log.bak` would go, and a copied-back file would
//! count as new. Here a file is ours only if its whole name is `agtd.log.` and a date,
//! and its age is that date's.
//!
//! Old files are deleted when the daemon starts ([`DailyFiles::open`]), with the first
//! line written on each new day (so no day's rollover is missed however long the daemon
//! runs), and when `log.keep_days` changes ([`KeepDays::set`]); each of them that deletes
//! a file logs which ([`say_deleted`]).
//!
//! A detached daemon's stderr, `logs/daemon.out`, is set aside as `daemon.out.1` once it
//! holds [`DAEMON_OUT_LIMIT`] bytes: by `agt daemon start`, and by the running daemon
//! itself, looked at once a minute from the same writer ([`StderrFile`]).

use chrono::{DateTime, Days, NaiveDate, Utc};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// What every daily file's name starts with; the date follows after a dot.
const PREFIX: &str = "agtd.log";

/// How big `logs/daemon.out` may grow before it is set aside. The daemon prints little
/// there (warnings and errors), so this takes many starts, or a daemon in trouble for a
/// long time; its tail is what `start` shows when the daemon exits.
pub const DAEMON_OUT_LIMIT: u64 = 8 * 1024 * 1024;

/// How often the running daemon looks at the size of its stderr file (at most: only a
/// line written looks).
const STDERR_CHECK_EVERY_S: i64 = 60;

/// Renames `path` to `path.1` (replacing the one before) when it holds `limit` bytes or
/// more, so that what is written next goes to a fresh file and the two together stay near
/// twice the limit. Returns whether it did.
pub fn set_aside_if_full(path: &Path, limit: u64) -> Result<bool, String> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(false) };
    if meta.len() < limit {
        return Ok(false);
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".1");
    match std::fs::rename(path, &aside) {
        Ok(()) => Ok(true),
        // A start racing this one set it aside first.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot set {} aside as {}: {e}", path.display(), Path::new(&aside).display())),
    }
}

/// A detached daemon's stdout and stderr: the file `agt daemon start` opened for them,
/// `logs/daemon.out`. Only a start used to set it aside, so a daemon that warned for
/// months between starts (a client retrying with a revoked token writes a line per 10 s
/// window) grew it without bound. Now the daemon sets it aside too, and points its
/// descriptors at a fresh file (`dup2`): what a panic prints goes there as well.
pub struct StderrFile {
    path: PathBuf,
    /// The descriptors that write to it: 1 and 2 (a test's own otherwise).
    fds: Vec<RawFd>,
    limit: u64,
    /// When to look at its size next (Unix seconds).
    next_check: i64,
}

impl StderrFile {
    /// `logs/daemon.out` as a detached daemon has it on its stdout and stderr.
    pub fn daemon_out(logs: &Path) -> StderrFile {
        StderrFile::new(logs.join("daemon.out"), vec![libc::STDOUT_FILENO, libc::STDERR_FILENO], DAEMON_OUT_LIMIT)
    }

    fn new(path: PathBuf, fds: Vec<RawFd>, limit: u64) -> StderrFile {
        StderrFile { path, fds, limit, next_check: 0 }
    }

    /// Sets the file aside if it is full and its time to be looked at has come, and
    /// has `fds` write to a fresh one. Returns whether it did.
    fn check(&mut self, now: i64) -> io::Result<bool> {
        if now < self.next_check {
            return Ok(false);
        }
        self.next_check = now + STDERR_CHECK_EVERY_S;
        // `daemon run --detached` by hand, its stderr elsewhere: an old file of a start's
        // is not ours to move, nor our descriptors to point at it.
        if !self.fds.first().is_some_and(|&fd| same_file(format!("/proc/self/fd/{fd}"), &self.path)) {
            return Ok(false);
        }
        if !set_aside_if_full(&self.path, self.limit).map_err(io::Error::other)? {
            return Ok(false);
        }
        let fresh = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        for &fd in &self.fds {
            // SAFETY: `dup2` onto a descriptor this process keeps open for this file;
            // `fresh` stays valid for the call, and is closed after (the copies remain).
            if unsafe { libc::dup2(fresh.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(true)
    }
}

/// Whether two paths name one file (a descriptor's `/proc/self/fd/N` follows to it).
fn same_file(a: impl AsRef<Path>, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The date in a daily log file's name (`agtd.log.2025-03-01`), or `None` for any other
/// name, including one with something before or after it (`agtd.log.2025-03-01.gz`).
fn date_of(name: &str) -> Option<NaiveDate> {
    let text = name.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    // chrono takes `2025-3-1` too; the appender never writes that, so it is not ours.
    (date.format("%Y-%m-%d").to_string() == text).then_some(date)
}

/// Deletes the daily log files in `dir` that are too old to keep on `today`: those dated
/// `keep_days` or more days before it (so `keep_days` = 2 keeps today's and yesterday's).
/// `keep_days` = 0 deletes nothing; so does a `dir` that cannot be read. Only regular
/// files named like ours are looked at. Returns the files deleted.
pub fn prune(dir: &Path, keep_days: u64, today: NaiveDate) -> Vec<PathBuf> {
    // A keep_days reaching back before chrono's calendar keeps everything.
    let Some(oldest_kept) = keep_days.checked_sub(1).and_then(|back| today.checked_sub_days(Days::new(back))) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let Some(date) = entry.file_name().to_str().and_then(date_of) else { continue };
        // file_type does not follow a symlink: a link named like ours is left alone.
        if date >= oldest_kept || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Gone already (the writer's thread and a `config set` may prune at once): fine.
        if std::fs::remove_file(entry.path()).is_ok() {
            deleted.push(entry.path());
        }
    }
    deleted
}

/// The live `log.keep_days`, shared by the log writer's thread (which prunes at each new
/// day) and the daemon (which changes it when the config does).
#[derive(Clone)]
pub struct KeepDays {
    days: Arc<AtomicU64>,
    dir: PathBuf,
}

impl KeepDays {
    /// Takes a new `log.keep_days` and prunes at once by it, returning the files deleted.
    pub fn set(&self, days: u64) -> Vec<PathBuf> {
        self.days.store(days, Ordering::Relaxed);
        prune(&self.dir, days, Utc::now().date_naive())
    }

    fn get(&self) -> u64 {
        self.days.load(Ordering::Relaxed)
    }
}

/// The daily files' writer: tracing-appender's, which also prunes with the first line it
/// writes on each new day (UTC).
pub struct DailyFiles {
    appender: RollingFileAppender,
    keep: KeepDays,
    /// When the next day begins (Unix seconds): the first write from then on prunes.
    next_day: i64,
    /// A detached daemon's stderr file, set aside when full; `None` in the foreground
    /// (a terminal, or systemd's journal, which keeps its own bounds).
    stderr: Option<StderrFile>,
}

impl DailyFiles {
    /// Prunes `dir` by `keep_days`, then opens (or creates) today's file there. Returns
    /// the writer, the handle that changes `keep_days`, and the files deleted.
    pub fn open(dir: &Path, keep_days: u64, stderr: Option<StderrFile>) -> io::Result<(DailyFiles, KeepDays, Vec<PathBuf>)> {
        let now = Utc::now();
        let deleted = prune(dir, keep_days, now.date_naive());
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(PREFIX)
            .build(dir)
            .map_err(|e| io::Error::other(format!("cannot open the daily log file in {}: {e}", dir.display())))?;
        let keep = KeepDays { days: Arc::new(AtomicU64::new(keep_days)), dir: dir.to_path_buf() };
        Ok((DailyFiles { appender, keep: keep.clone(), next_day: next_day_after(now), stderr }, keep, deleted))
    }

    /// Prunes if `now` is in a day after the one of the last prune, and says so in the
    /// log as a start's prune does. This runs on the log writer's thread: the line goes
    /// through the non-blocking writer's queue (lossy, so it never waits on itself) and is
    /// written after the line being written now, the new day's first.
    fn prune_on_new_day(&mut self, now: DateTime<Utc>) {
        if now.timestamp() >= self.next_day {
            let keep_days = self.keep.get();
            say_deleted(&prune(&self.keep.dir, keep_days, now.date_naive()), keep_days, Pruned::NewDay);
            self.next_day = next_day_after(now);
        }
    }

    /// Sets a full stderr file aside ([`StderrFile`]), and says so in the daily file.
    fn set_stderr_aside(&mut self, now: DateTime<Utc>) {
        let Some(stderr) = &mut self.stderr else { return };
        match stderr.check(now.timestamp()) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(file = %stderr.path.display(), limit = stderr.limit, "set the daemon's stderr file aside as .1: it was full")
            }
            Err(e) => tracing::warn!(file = %stderr.path.display(), error = %e, "cannot set the daemon's full stderr file aside"),
        }
    }
}

/// What made a prune run: said with the files it deleted.
#[derive(Debug, Clone, Copy)]
pub enum Pruned {
    Start,
    NewDay,
    KeepDaysChanged,
}

impl Pruned {
    fn as_str(self) -> &'static str {
        match self {
            Pruned::Start => "the daemon started",
            Pruned::NewDay => "a new day began (UTC)",
            Pruned::KeepDaysChanged => "log.keep_days changed",
        }
    }
}

/// Logs the daily files a prune deleted, by name, if it deleted any: the one line every
/// prune (start, new day, changed `log.keep_days`) writes.
pub fn say_deleted(deleted: &[PathBuf], keep_days: u64, why: Pruned) {
    if deleted.is_empty() {
        return;
    }
    let mut names: Vec<String> = deleted.iter().map(|p| p.file_name().unwrap_or(p.as_os_str()).to_string_lossy().into_owned()).collect();
    names.sort();
    tracing::info!(count = names.len(), files = %names.join(", "), keep_days, on = why.as_str(), "deleted daily log files older than log.keep_days");
}

/// The start of the UTC day after `now`'s, in Unix seconds.
fn next_day_after(now: DateTime<Utc>) -> i64 {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
    tomorrow.and_hms_opt(0, 0, 0).map_or(i64::MAX, |t| t.and_utc().timestamp())
}

impl Write for DailyFiles {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let now = Utc::now();
        self.prune_on_new_day(now);
        self.set_stderr_aside(now);
        self.appender.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.appender.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// A logs folder as an operator may have it: our daily files, and files that only
    /// look like them.
    fn logs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "agtd.log.2025-02-20",
            "agtd.log.2025-02-27",
            "agtd.log.2025-02-28",
            "agtd.log.2025-03-01",
            "agtd.log.2025-03-02",
            "agtd.log.2025-02-01.gz",
            "agtd.log.2025-2-1",
            "agtd.log.bak",
            "agtd.log",
            "xagtd.log.2025-02-01",
            "daemon.out",
            "daemon.out.1",
        ] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("agtd.log.2025-01-01")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("daemon.out"), dir.path().join("agtd.log.2025-01-02")).unwrap();
        dir
    }

    #[test]
    fn daemon_out_is_set_aside_once_it_reaches_the_limit_and_replaces_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let (out, aside) = (dir.path().join("daemon.out"), dir.path().join("daemon.out.1"));
        set_aside_if_full(&out, 10).unwrap();
        assert!(!out.exists() && !aside.exists(), "nothing to set aside");
        std::fs::write(&aside, "the run before").unwrap();
        std::fs::write(&out, "123456789").unwrap();
        set_aside_if_full(&out, 10).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "123456789", "under the limit: kept to append to");
        std::fs::write(&out, "1234567890").unwrap();
        set_aside_if_full(&out, 10).unwrap();
        assert!(!out.exists());
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "1234567890", "at the limit: set aside, the older one replaced");
    }

    /// A detached daemon that runs for months keeps its stderr file bounded: the first line
    /// written once the file is full sets it aside, and what the process prints on its
    /// descriptors from then on goes to a fresh file. Looked at once a minute, not per line.
    #[test]
    fn a_full_stderr_file_is_set_aside_while_the_daemon_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (out, aside) = (dir.path().join("daemon.out"), dir.path().join("daemon.out.1"));
        let writer = std::fs::OpenOptions::new().create(true).append(true).open(&out).unwrap();
        let fd = writer.as_raw_fd();
        let mut stderr = StderrFile::new(out.clone(), vec![fd], 10);
        let say = |text: &str| assert_eq!(unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) }, text.len() as isize);
        say("12345");
        assert!(!stderr.check(1000).unwrap(), "under the limit");
        say("67890");
        assert!(!stderr.check(1059).unwrap(), "full, but looked at less than a minute ago");
        assert!(stderr.check(1060).unwrap());
        say("after");
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "1234567890");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "after", "the descriptor writes to the fresh file");
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!stderr.check(2000).unwrap(), "the fresh file is under the limit");
        // A descriptor that writes elsewhere leaves a full file of that name alone.
        std::fs::write(&out, "1234567890").unwrap();
        let elsewhere = tempfile::tempfile().unwrap();
        let mut other = StderrFile::new(out.clone(), vec![elsewhere.as_raw_fd()], 10);
        assert!(!other.check(3000).unwrap());
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "1234567890");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "1234567890");
    }

    #[test]
    fn only_daily_files_named_like_ours_have_a_date() {
        assert_eq!(date_of("agtd.log.2025-03-01"), Some(day("2025-03-01")));
        for other in [
            "agtd.log",
            "agtd.log.",
            "agtd.log.2025-03-01.gz",
            "agtd.log.2025-3-1",
            "agtd.log.2025-02-30",
            "agtd.log-2025-03-01",
            "xagtd.log.2025-03-01",
            "agtd.log.bak",
        ] {
            assert_eq!(date_of(other), None, "{other}");
        }
    }

    #[test]
    fn files_older_than_keep_days_go_and_every_other_file_stays() {
        let dir = logs();
        let deleted = prune(dir.path(), 2, day("2025-03-01"));
        let mut deleted: Vec<String> = deleted.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        deleted.sort();
        assert_eq!(deleted, ["agtd.log.2025-02-20", "agtd.log.2025-02-27"]);
        assert_eq!(
            names(dir.path()),
            [
                "agtd.log",
                "agtd.log.2025-01-01",
                "agtd.log.2025-01-02",
                "agtd.log.2025-02-01.gz",
                "agtd.log.2025-02-28",
                "agtd.log.2025-03-01",
                "agtd.log.2025-03-02",
                "agtd.log.2025-2-1",
                "agtd.log.bak",
                "daemon.out",
                "daemon.out.1",
                "xagtd.log.2025-02-01",
            ],
            "yesterday's, today's and a future day's stay (a clock set back must not lose them); so does every file not named like ours, a folder and a symlink"
        );
        assert!(dir.path().join("agtd.log.2025-01-01").is_dir());
    }

    #[test]
    fn one_day_keeps_only_today_and_zero_keeps_all() {
        let dir = logs();
        let before = names(dir.path());
        assert!(prune(dir.path(), 0, day("2025-03-01")).is_empty());
        assert!(prune(dir.path(), u64::MAX, day("2025-03-01")).is_empty(), "more days than the calendar has keeps all");
        assert_eq!(names(dir.path()), before);
        prune(dir.path(), 1, day("2025-03-01"));
        let daily: Vec<String> = names(dir.path()).into_iter().filter(|n| date_of(n).is_some()).collect();
        // The folder and the symlink named like ours stay, as ever.
        assert_eq!(daily, ["agtd.log.2025-01-01", "agtd.log.2025-01-02", "agtd.log.2025-03-01", "agtd.log.2025-03-02"]);
    }

    #[test]
    fn opening_prunes_and_keeps_the_names_of_daily_files() {
        let dir = logs();
        let today = Utc::now().date_naive();
        let old = format!("agtd.log.{}", today - Days::new(3));
        let kept = format!("agtd.log.{}", today - Days::new(2));
        std::fs::write(dir.path().join(&old), "").unwrap();
        std::fs::write(dir.path().join(&kept), "").unwrap();
        let (mut files, _keep, deleted) = DailyFiles::open(dir.path(), 3, None).unwrap();
        assert!(deleted.contains(&dir.path().join(&old)), "{deleted:?}");
        assert!(!dir.path().join(&old).exists() && dir.path().join(&kept).exists());
        files.write_all(b"a line\n").unwrap();
        files.flush().unwrap();
        let written = std::fs::read_to_string(dir.path().join(format!("agtd.log.{today}"))).unwrap();
        assert_eq!(written, "a line\n", "today's file, named agtd.log.YYYY-MM-DD");
        assert!(dir.path().join("agtd.log.bak").exists());
    }

    /// The rollover's prune says which files it deleted, as a start's prune does.
    #[test]
    fn the_rollover_prune_logs_the_files_it_deleted() {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).finish();
        let dir = tempfile::tempdir().unwrap();
        let (mut files, keep, _) = DailyFiles::open(dir.path(), 2, None).unwrap();
        let today = Utc::now().date_naive();
        let yesterday = format!("agtd.log.{}", today - Days::new(1));
        let older = format!("agtd.log.{}", today - Days::new(5));
        for name in [&yesterday, &older] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let tomorrow = Utc.from_utc_datetime(&(today + Days::new(1)).and_hms_opt(0, 0, 1).unwrap());
        tracing::subscriber::with_default(subscriber, || files.prune_on_new_day(tomorrow));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("deleted daily log files older than log.keep_days"), "{text}");
        assert!(text.contains(&format!("files={older}, {yesterday}")) && text.contains("count=2"), "{text}");
        assert!(text.contains("a new day began"), "{text}");
        // A rollover that deletes nothing says nothing.
        assert!(keep.set(0).is_empty());
        lines.0.lock().unwrap().clear();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).finish();
        let later = Utc.from_utc_datetime(&(today + Days::new(2)).and_hms_opt(0, 0, 1).unwrap());
        tracing::subscriber::with_default(subscriber, || files.prune_on_new_day(later));
        assert!(lines.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_first_write_of_a_new_day_prunes_by_the_live_keep_days() {
        let dir = tempfile::tempdir().unwrap();
        let (mut files, keep, _) = DailyFiles::open(dir.path(), 2, None).unwrap();
        let today = Utc::now().date_naive();
        let yesterday = dir.path().join(format!("agtd.log.{}", today - Days::new(1)));
        std::fs::write(&yesterday, "").unwrap();
        files.prune_on_new_day(Utc::now());
        assert!(yesterday.exists(), "within the day nothing is pruned again");
        // Tomorrow, yesterday's file is two days old.
        let tomorrow = Utc.from_utc_datetime(&(today + Days::new(1)).and_hms_opt(0, 0, 1).unwrap());
        files.prune_on_new_day(tomorrow);
        assert!(!yesterday.exists(), "pruned at the day's rollover");
        // A changed keep_days prunes at once, and the next rollover goes by it.
        let two_ago = dir.path().join(format!("agtd.log.{}", today - Days::new(2)));
        std::fs::write(&two_ago, "").unwrap();
        assert!(keep.set(3).is_empty());
        assert_eq!(keep.set(2), std::slice::from_ref(&two_ago));
        std::fs::write(&two_ago, "").unwrap();
        keep.days.store(5, Ordering::Relaxed);
        let later = Utc.from_utc_datetime(&(today + Days::new(2)).and_hms_opt(0, 0, 0).unwrap());
        files.prune_on_new_day(later);
        assert!(two_ago.exists(), "four days old on that day: kept by keep_days = 5");
    }
}
