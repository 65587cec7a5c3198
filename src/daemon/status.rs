//! `<store>/status.json`: what the daemon is doing, for `edgepull status` and for tools.
//!
//! Owns: the file's format (versioned) and the human rendering. The file is rewritten
//! after every state change through [`super::atomic::replace`] (a fresh temp file created
//! exclusively in the store root, mode 0640 whatever the umask, fsynced, renamed), so a
//! reader sees the old or the new version, never a torn one, and a name planted in the
//! store root is never written through. [`write`] and [`read`] block: the daemon calls
//! `write` only from `spawn_blocking`, never on the runtime.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Name of the status file in the store root.
pub(crate) const STATUS_FILE: &str = "status.json";
/// The format version written.
pub(crate) const STATUS_VERSION: u32 = 1;

/// One image's sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Up to date; waiting for the next check.
    Idle,
    /// Asking the registry which digest the reference points at.
    Checking,
    /// Downloading a new or incomplete version.
    Downloading,
    /// A new version exists but does not fit the disk budget; checked again next interval.
    Deferred,
    /// The last attempt failed; retried with backoff.
    Error,
}

impl State {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Checking => "checking",
            Self::Downloading => "downloading",
            Self::Deferred => "deferred",
            Self::Error => "error",
        }
    }
}

/// A point in time, as RFC 3339 UTC and unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// `2026-01-31T12:00:00Z`.
    pub at: String,
    /// Seconds since the epoch.
    pub unix: u64,
}

impl Stamp {
    /// `t` as a stamp (a time before 1970 counts as the epoch).
    pub fn of(t: SystemTime) -> Self {
        let unix = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            at: rfc3339(unix),
            unix,
        }
    }
}

/// The last error of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When.
    #[serde(flatten)]
    pub when: Stamp,
    /// The error and its causes on one line.
    pub message: String,
}

/// The last run of `hooks.on_update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// When it finished.
    #[serde(flatten)]
    pub when: Stamp,
    /// The digest it ran for.
    pub digest: String,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Killed after `hooks.timeout_secs`.
    pub timed_out: bool,
    /// Could not be started, or killed for shutdown.
    pub error: Option<String>,
    /// Whether it succeeded (exit code 0).
    pub ok: bool,
}

/// One image in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStatus {
    /// The reference, as recorded in `index.json`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its state.
    pub state: State,
    /// The manifest digest recorded as current.
    pub current_digest: Option<String>,
    /// The most recent previous version kept for rollback.
    pub previous_digest: Option<String>,
    /// Bytes of the current download stored so far (blobs already present count).
    pub bytes_done: u64,
    /// Total bytes of the image being downloaded (or of the current one).
    pub bytes_total: u64,
    /// Why the state is deferred or error, in one line.
    pub message: Option<String>,
    /// The last check that ended without error.
    pub last_success: Option<Stamp>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// Why the digest the tag points at was refused (`signatures`): `missing`, `invalid`
    /// or `mismatch`; absent when nothing is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// A new digest the tag points at, waiting for this device's rollout slot (`rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_digest: Option<String>,
    /// When the pending digest will be adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_at: Option<Stamp>,
    /// The last update hook run.
    pub last_hook: Option<HookStatus>,
    /// The last health check run (`hooks.health_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<HookStatus>,
    /// A digest the tag points at that failed its health check and was rolled back: not
    /// adopted again until the tag points elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_digest: Option<String>,
    /// Checks made since the daemon started.
    pub checks: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Seconds until the next check, when the status was written.
    pub next_check_in_secs: Option<u64>,
}

/// The whole of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_VERSION`].
    pub version: u32,
    /// The daemon's pid.
    pub pid: u32,
    /// When the file was written.
    pub updated: Stamp,
    /// One entry per configured image, in config order.
    pub images: Vec<ImageStatus>,
    /// The link's cap, quota use, rate and next window (`link` in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<crate::link::LinkStatus>>,
}

impl Status {
    /// Bytes the downloads running now still need.
    fn remaining(&self) -> u64 {
        self.images
            .iter()
            .filter(|i| i.state == State::Downloading)
            .map(|i| i.bytes_total.saturating_sub(i.bytes_done))
            .sum()
    }

    /// Set `link.eta_secs`: the running downloads' remaining bytes at `min(cap, measured
    /// rate)` ([`crate::link::LinkStatus::eta`]); none while nothing downloads or the link
    /// is paused.
    pub(crate) fn fill_eta(&mut self) {
        let remaining = self.remaining();
        if let Some(link) = self.link.as_deref_mut() {
            link.eta_secs = (remaining > 0 && link.paused.is_none())
                .then(|| link.eta(remaining).map(|d| d.as_secs()))
                .flatten();
        }
    }
}

/// A rate for humans: `2.0 MiB/s`.
fn human_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec))
}

/// The `link` block of [`render`].
fn render_link(out: &mut String, link: &crate::link::LinkStatus) {
    let _ = writeln!(
        out,
        "
link"
    );
    let cap = link
        .cap_bytes_per_sec
        .map_or_else(|| "none".to_string(), human_rate);
    let _ = writeln!(out, "  cap:       {cap}");
    let _ = writeln!(
        out,
        "  rate:      {} (last 5 s)",
        human_rate(link.rate_bytes_per_sec)
    );
    let quota = link
        .quota_bytes_per_day
        .map(|q| format!(" of {} (daily quota)", human_bytes(q)))
        .unwrap_or_default();
    let _ = writeln!(out, "  today:     {}{quota}", human_bytes(link.bytes_today));
    if let Some(p) = &link.paused {
        let _ = writeln!(out, "  paused:    {p}");
    }
    if let Some(n) = &link.next_window_start {
        let _ = writeln!(out, "  next window: {n}");
    }
    if let Some(e) = link.eta_secs {
        let _ = writeln!(
            out,
            "  eta:       {} for the running downloads",
            human_duration(Duration::from_secs(e))
        );
    }
}

/// Replace `root/status.json` atomically, mode 0640 ([`super::atomic::replace`]).
pub(crate) fn write(root: &Path, status: &Status) -> io::Result<()> {
    let mut body = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    body.push(b'\n');
    super::atomic::replace(&root.join(STATUS_FILE), &body, super::atomic::STATUS_MODE)
}

/// Read `root/status.json`.
pub fn read(root: &Path) -> Result<Status, StatusReadError> {
    let path = root.join(STATUS_FILE);
    let bytes = std::fs::read(&path).map_err(|source| StatusReadError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StatusReadError::Parse { path, source })
}

/// Why `status.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusReadError {
    /// Missing or unreadable.
    #[error(
        "cannot read {}: is `edgepull run` running with this config (it writes the file at start-up)?",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not a status file of this version.
    #[error("{} is not a status file this edgepull understands; restart the daemon to rewrite it", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// `unix` seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub(crate) fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), by Howard Hinnant's civil calendar algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A byte count for humans: `512 B`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration for humans: `45s`, `4m05s`, `2h10m`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `edgepull status` for humans: one block per image.
pub fn render(status: &Status, now: SystemTime) -> String {
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let ago = |s: &Stamp| {
        format!(
            "{} ({} ago)",
            s.at,
            human_duration(Duration::from_secs(now_unix.saturating_sub(s.unix)))
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "edgepull daemon pid {}, status written {}",
        status.pid,
        ago(&status.updated)
    );
    if status.images.is_empty() {
        out.push_str("no images configured\n");
    }
    for i in &status.images {
        let _ = writeln!(out, "\n{}", i.reference);
        let mut state = i.state.as_str().to_string();
        if i.state == State::Downloading && i.bytes_total > 0 {
            let _ = write!(
                state,
                " {} of {} ({}%)",
                human_bytes(i.bytes_done),
                human_bytes(i.bytes_total),
                i.bytes_done.saturating_mul(100) / i.bytes_total
            );
        }
        if i.state == State::Downloading
            && let Some(eta) = status
                .link
                .as_deref()
                .filter(|l| l.paused.is_none())
                .and_then(|l| l.eta(i.bytes_total.saturating_sub(i.bytes_done)))
        {
            let _ = write!(state, ", ETA {}", human_duration(eta));
        }
        if let Some(m) = &i.message {
            let _ = write!(state, ": {m}");
        }
        let _ = writeln!(out, "  state:     {state}");
        let _ = writeln!(
            out,
            "  current:   {}",
            i.current_digest.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(
            out,
            "  previous:  {}",
            i.previous_digest.as_deref().unwrap_or("(none)")
        );
        if let Some(s) = &i.last_success {
            let _ = writeln!(out, "  last ok:   {}", ago(s));
        }
        if let Some(e) = &i.last_error {
            let _ = writeln!(out, "  last error: {}: {}", ago(&e.when), e.message);
        }
        if let Some(sig) = &i.signature {
            let _ = writeln!(
                out,
                "  signature: {sig} (the update is refused until the tag moves)"
            );
        }
        if let (Some(d), Some(at)) = (&i.pending_digest, &i.adopt_at) {
            let wait = Duration::from_secs(at.unix.saturating_sub(now_unix));
            let _ = writeln!(
                out,
                "  pending: {d}, adopted at {} (in {}; staged rollout, `systemctl kill --kill-whom=main -s SIGUSR2 edgepull` adopts now)",
                at.at,
                human_duration(wait)
            );
        }
        if let Some(d) = &i.failed_digest {
            let _ = writeln!(
                out,
                "  failed:    {d} (failed its health check and was rolled back; not adopted again until the tag moves)"
            );
        }
        for (what, h) in [
            ("last hook", &i.last_hook),
            ("last health check", &i.last_health_check),
        ] {
            let Some(h) = h else { continue };
            let result = match (h.exit_code, h.signal, h.timed_out, &h.error) {
                (_, _, true, _) => "timed out, killed".to_string(),
                (_, _, _, Some(e)) => e.clone(),
                (Some(c), _, _, _) => format!("exit {c}"),
                (None, Some(s), _, _) => format!("killed by signal {s}"),
                _ => "unknown".to_string(),
            };
            let _ = writeln!(out, "  {what}: {result} for {} ({})", h.digest, ago(&h.when));
        }
        if let Some(n) = i.next_check_in_secs {
            let _ = writeln!(out, "  next check: in {}", human_duration(Duration::from_secs(n)));
        }
    }
    if let Some(link) = &status.link {
        render_link(&mut out, link);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_799, "2024-02-28T23:59:59Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (unix, want) in cases {
            assert_eq!(rfc3339(unix), want, "{unix}");
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(50 << 20), "50.0 MiB");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_duration(Duration::from_secs(7800)), "2h10m");
    }

    fn sample() -> Status {
        Status {
            version: STATUS_VERSION,
            pid: 42,
            updated: Stamp::of(UNIX_EPOCH + Duration::from_secs(1000)),
            link: None,
            images: vec![ImageStatus {
                reference: "h/app:stable".into(),
                state: State::Downloading,
                current_digest: Some("sha256:aa".into()),
                previous_digest: None,
                bytes_done: 512,
                bytes_total: 1024,
                message: None,
                last_success: Some(Stamp::of(UNIX_EPOCH + Duration::from_secs(900))),
                last_error: Some(LastError {
                    when: Stamp::of(UNIX_EPOCH + Duration::from_secs(950)),
                    message: "boom".into(),
                }),
                signature: None,
                pending_digest: Some("sha256:bb".into()),
                adopt_at: Some(Stamp::of(UNIX_EPOCH + Duration::from_secs(1130))),
                last_hook: Some(HookStatus {
                    when: Stamp::of(UNIX_EPOCH + Duration::from_secs(990)),
                    digest: "sha256:aa".into(),
                    exit_code: Some(3),
                    signal: None,
                    timed_out: false,
                    error: None,
                    ok: false,
                }),
                last_health_check: Some(HookStatus {
                    when: Stamp::of(UNIX_EPOCH + Duration::from_secs(995)),
                    digest: "sha256:aa".into(),
                    exit_code: None,
                    signal: None,
                    timed_out: true,
                    error: None,
                    ok: false,
                }),
                failed_digest: Some("sha256:cc".into()),
                checks: 7,
                consecutive_failures: 0,
                next_check_in_secs: Some(30),
            }],
        }
    }

    #[test]
    fn round_trips_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATUS_FILE.to_string()]);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(STATUS_FILE)).unwrap()).unwrap();
        assert_eq!(v["images"][0]["ref"], "h/app:stable");
        assert_eq!(v["images"][0]["state"], "downloading");
        assert_eq!(v["images"][0]["last_error"]["at"], "1970-01-01T00:15:50Z");
        assert!(matches!(
            read(&dir.path().join("nope")),
            Err(StatusReadError::Read { .. })
        ));
    }

    #[test]
    fn render_for_humans() {
        let text = render(&sample(), UNIX_EPOCH + Duration::from_secs(1010));
        for needle in [
            "pid 42",
            "h/app:stable",
            "state:     downloading 512 B of 1.0 KiB (50%)",
            "current:   sha256:aa",
            "previous:  (none)",
            "last error: 1970-01-01T00:15:50Z (1m00s ago): boom",
            "last hook: exit 3 for sha256:aa",
            "last health check: timed out, killed for sha256:aa",
            "failed:    sha256:cc (failed its health check and was rolled back",
            "next check: in 30s",
            "pending: sha256:bb, adopted at 1970-01-01T00:18:50Z (in 2m00s",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert!(!text.contains("link"), "no link block without one:\n{text}");
        assert!(!text.contains("ETA"), "no ETA without a link status:\n{text}");
    }

    fn capped(rate: u64, paused: bool) -> crate::link::LinkStatus {
        crate::link::LinkStatus {
            cap_bytes_per_sec: Some(4 << 20),
            quota_bytes_per_day: Some(100 << 20),
            bytes_today: 12 << 20,
            rate_bytes_per_sec: rate,
            paused: paused
                .then(|| "outside download windows; downloads go on at 2030-01-02T00:00:00Z".into()),
            next_window_start: paused.then(|| "2030-01-02T00:00:00Z".into()),
            eta_secs: None,
        }
    }

    /// The ETA uses the slower of the cap and the measured rate, over the bytes the running
    /// downloads still need; a paused link shows when it reopens instead.
    #[test]
    fn link_status_eta_and_rendering() {
        let mut s = sample();
        s.images[0].bytes_done = 4 << 20;
        s.images[0].bytes_total = 68 << 20;
        // Measured 2 MiB/s under a 4 MiB/s cap: 64 MiB take 32 s.
        s.link = Some(Box::new(capped(2 << 20, false)));
        s.fill_eta();
        assert_eq!(s.link.as_ref().unwrap().eta_secs, Some(32));
        // Measured faster than the cap (a burst): the cap decides, 16 s.
        s.link = Some(Box::new(capped(9 << 20, false)));
        s.fill_eta();
        assert_eq!(s.link.as_ref().unwrap().eta_secs, Some(16));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["link"]["eta_secs"], 16);
        assert_eq!(json["link"]["cap_bytes_per_sec"], 4 << 20);
        assert_eq!(json["link"]["bytes_today"], 12 << 20);
        assert_eq!(json["link"]["rate_bytes_per_sec"], 9 << 20);
        let text = render(&s, UNIX_EPOCH + Duration::from_secs(1010));
        for needle in [
            "state:     downloading 4.0 MiB of 68.0 MiB (5%), ETA 16s",
            "\nlink\n",
            "cap:       4.0 MiB/s",
            "rate:      9.0 MiB/s (last 5 s)",
            "today:     12.0 MiB of 100.0 MiB (daily quota)",
            "eta:       16s for the running downloads",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert!(!text.contains("paused"), "{text}");

        // Paused: no ETA, the reason and the next window instead.
        s.link = Some(Box::new(capped(0, true)));
        s.fill_eta();
        assert_eq!(s.link.as_ref().unwrap().eta_secs, None);
        let text = render(&s, UNIX_EPOCH + Duration::from_secs(1010));
        for needle in [
            "paused:    outside download windows; downloads go on at 2030-01-02T00:00:00Z",
            "next window: 2030-01-02T00:00:00Z",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert!(!text.contains("ETA") && !text.contains("eta:"), "{text}");

        // Nothing downloading: no ETA.
        s.images[0].state = State::Idle;
        s.link = Some(Box::new(capped(2 << 20, false)));
        s.fill_eta();
        assert_eq!(s.link.as_ref().unwrap().eta_secs, None);
    }
}
