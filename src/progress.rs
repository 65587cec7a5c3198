//! Progress reporting for blob transfers: bars on a terminal, log lines otherwise.
//!
//! Owns: how progress is shown, and [`FetchStats`], the account of one blob transfer it is
//! given at the end. It is told about offsets; it never touches the network or the store,
//! depends on no transfer code (the fetcher calls it, never the reverse), and never prints
//! URLs (only digests and sizes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use edgepull_core::oci::{Descriptor, Digest};

/// What one blob fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// The blob was already in the store: nothing was requested.
    pub(crate) already_present: bool,
    /// Offset the ingest had when this run opened it (a durable checkpoint from an earlier run).
    pub(crate) resumed_from: u64,
    /// Body bytes received from the network in this run.
    pub(crate) bytes_received: u64,
    /// Of those, bytes received for offsets already held (server ignored Range, restart).
    pub(crate) bytes_refetched: u64,
    /// Ranged reopens after a dropped or stalled connection.
    pub(crate) reconnects: u32,
}

/// Receives transfer events. Implementations must be cheap: `advance` runs per chunk.
pub trait Progress: Send + Sync {
    /// A transfer starts (or resumes) at `offset`.
    fn start(&self, desc: &Descriptor, offset: u64);
    /// `offset` bytes are now stored.
    fn advance(&self, desc: &Descriptor, offset: u64);
    /// The transfer went back to byte 0.
    fn restart(&self, desc: &Descriptor);
    /// Done and verified.
    fn finish(&self, desc: &Descriptor, stats: &FetchStats);
    /// Given up.
    fn fail(&self, desc: &Descriptor);
    /// One image's transfers are over (done or not): what was drawn stays as it is, and
    /// the next image starts below whatever the caller prints in between.
    fn end(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &Descriptor, _: u64) {}
    fn advance(&self, _: &Descriptor, _: u64) {}
    fn restart(&self, _: &Descriptor) {}
    fn finish(&self, _: &Descriptor, _: &FetchStats) {}
    fn fail(&self, _: &Descriptor) {}
}

/// The bars being drawn now, if any: log lines written through [`log_writer`] suspend them
/// so a line never tears a bar and old bars are not drawn twice.
static DRAWING: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn set_drawing(multi: &MultiProgress) {
    *DRAWING.lock().unwrap_or_else(|p| p.into_inner()) = Some(multi.clone());
}

/// stderr for log lines (a `tracing_subscriber` writer): while [`Bars`] are drawn, each
/// line is written with the bars suspended, then they are redrawn below it.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let drawing = DRAWING.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match drawing {
            Some(multi) => multi.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Per-blob bars with bytes, rate and ETA (under the link's cap, when one is set).
pub struct Bars {
    multi: Mutex<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    cap: Option<u64>,
}

/// A realistic time for `remaining` bytes: at the slower of the cap and the measured rate
/// ([`edgepull_core::link::eta`]).
fn capped_eta(remaining: u64, cap: Option<u64>, measured: f64) -> Option<Duration> {
    // `as` saturates: NaN and negatives give 0 (unknown).
    edgepull_core::link::eta(remaining, cap, Some(measured as u64))
}

/// The bar template: with a cap, the cap next to the measured rate and the ETA under it.
fn template(cap: Option<u64>) -> String {
    match cap {
        Some(c) => format!(
            "{{prefix}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} (cap {}/s) ETA {{capped_eta}} {{msg}}",
            indicatif::BinaryBytes(c)
        ),
        None => {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}".to_string()
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn new() -> Self {
        Self::capped(None)
    }

    /// Bars for downloads that share a cap of `cap` bytes per second (`None`: no cap).
    pub fn capped(cap: Option<u64>) -> Self {
        Self {
            multi: Mutex::new(MultiProgress::new()),
            bars: Mutex::new(HashMap::new()),
            cap,
        }
    }

    fn bar(&self, d: &Digest) -> Option<ProgressBar> {
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .cloned()
    }
}

impl Progress for Bars {
    fn start(&self, desc: &Descriptor, offset: u64) {
        let bar = {
            let multi = self.multi.lock().unwrap_or_else(|p| p.into_inner());
            set_drawing(&multi);
            multi.add(ProgressBar::new(desc.size))
        };
        let cap = self.cap;
        let style = ProgressStyle::with_template(&template(cap))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "capped_eta",
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let left = s.len().unwrap_or(0).saturating_sub(s.pos());
                    if let Some(eta) = capped_eta(left, cap, s.per_sec()) {
                        let _ = write!(w, "{:#}", HumanDuration(eta));
                    }
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(desc.digest.short());
        bar.set_position(offset);
        if offset > 0 {
            bar.set_message(format!("(resumed at {offset})"));
        }
        bar.reset_eta();
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(desc.digest, bar);
    }
    fn advance(&self, desc: &Descriptor, offset: u64) {
        if let Some(b) = self.bar(&desc.digest) {
            b.set_position(offset);
        }
    }
    fn restart(&self, desc: &Descriptor) {
        if let Some(b) = self.bar(&desc.digest) {
            b.set_position(0);
            b.set_message("(restarted)");
        }
    }
    fn finish(&self, desc: &Descriptor, _: &FetchStats) {
        if let Some(b) = self.bar(&desc.digest) {
            b.finish_with_message("verified");
        }
    }
    fn fail(&self, desc: &Descriptor) {
        if let Some(b) = self.bar(&desc.digest) {
            b.abandon_with_message("failed");
        }
    }
    fn end(&self) {
        // A finished MultiProgress is left on screen as drawn; a new one draws the next
        // image's bars below the lines printed in between (no redraw of old bars).
        for (_, bar) in self.bars.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        *self.multi.lock().unwrap_or_else(|p| p.into_inner()) = MultiProgress::new();
        *DRAWING.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Plain log lines: start, every `every` (or each quarter), and the end.
pub struct LogLines {
    every: Duration,
    cap: Option<u64>,
    state: Mutex<HashMap<Digest, (Instant, Instant, u64, u8)>>,
}

impl LogLines {
    /// Log at most once per `every` per blob (plus quarter marks).
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            cap: None,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Log the cap and an ETA under it (`None`: no cap).
    pub fn capped(mut self, cap: Option<u64>) -> Self {
        self.cap = cap;
        self
    }
}

impl Progress for LogLines {
    fn start(&self, desc: &Descriptor, offset: u64) {
        tracing::info!(digest = %desc.digest, size = desc.size, offset, "downloading blob");
        let now = Instant::now();
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(desc.digest, (now, now, offset, 0));
    }
    fn advance(&self, desc: &Descriptor, offset: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((started, last, start_off, quarter)) = st.get_mut(&desc.digest) else {
            return;
        };
        let q = (offset.saturating_mul(4) / desc.size.max(1)) as u8;
        if last.elapsed() >= self.every || q > *quarter {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = (offset.saturating_sub(*start_off)) as f64 / secs;
            let eta_secs = capped_eta(desc.size.saturating_sub(offset), self.cap, rate).map(|d| d.as_secs());
            tracing::info!(digest = %desc.digest, offset, size = desc.size, rate_bytes_per_sec = rate as u64, cap_bytes_per_sec = self.cap, eta_secs, "blob progress");
            *last = Instant::now();
            *quarter = q;
        }
    }
    fn restart(&self, desc: &Descriptor) {
        tracing::info!(digest = %desc.digest, "blob restarted from zero");
    }
    fn finish(&self, desc: &Descriptor, stats: &FetchStats) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&desc.digest);
        tracing::info!(digest = %desc.digest, size = desc.size, received = stats.bytes_received, resumed_from = stats.resumed_from, reconnects = stats.reconnects, "blob verified");
    }
    fn fail(&self, desc: &Descriptor) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&desc.digest);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{capped_eta, template};

    /// With a cap the bars show it and an ETA at the slower of the cap and the measured
    /// rate; without one, indicatif's own ETA.
    #[test]
    fn bars_show_the_cap_and_an_eta_under_it() {
        let t = template(Some(2 << 20));
        assert!(t.contains("(cap 2.00 MiB/s)"), "{t}");
        assert!(t.contains("ETA {capped_eta}"), "{t}");
        indicatif::ProgressStyle::with_template(&t).expect("a valid template");
        let t = template(None);
        assert!(!t.contains("cap") && t.contains("ETA {eta}"), "{t}");
        // 64 MiB left under a 4 MiB/s cap: 16 s even when the measured rate bursts above.
        let left = 64 << 20;
        assert_eq!(
            capped_eta(left, Some(4 << 20), 9e6),
            Some(Duration::from_secs(16))
        );
        // Measured slower than the cap: 32 s at 2 MiB/s.
        assert_eq!(
            capped_eta(left, Some(4 << 20), 2_097_152.0),
            Some(Duration::from_secs(32))
        );
        // Nothing measured yet: the cap alone.
        assert_eq!(
            capped_eta(left, Some(4 << 20), 0.0),
            Some(Duration::from_secs(16))
        );
        assert_eq!(
            capped_eta(left, Some(4 << 20), f64::NAN),
            Some(Duration::from_secs(16))
        );
        assert_eq!(capped_eta(left, None, 0.0), None);
    }

    /// Every `.rs` file under `dir`, recursively.
    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Colour (ANSI escapes) only on a terminal: every text log subscriber in the product
    /// and the demo sets `with_ansi` explicitly (tracing-subscriber colours by default,
    /// which writes escape codes into a redirected log), and no source writes a raw escape.
    #[test]
    fn text_logs_colour_only_on_a_terminal() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "examples"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.iter().any(|f| f.ends_with("examples/demo.rs")), "{files:?}");
        let builder = ["tracing_subscriber", "::fmt()"].concat();
        let escapes = [
            ["\\x", "1b["].concat(),
            ["\\u{", "1b}["].concat(),
            ["\\0", "33["].concat(),
        ];
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            // Up to the test module: tests may spell escapes to check they never get out.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (at, _) in code.match_indices(&builder) {
                let chain = &code[at..];
                let end = chain
                    .find(".init()")
                    .or_else(|| chain.find(".finish()"))
                    .unwrap_or(chain.len());
                let chain = &chain[..end];
                assert!(
                    chain.contains(".json()") || chain.contains(".with_ansi("),
                    "{}: a text subscriber without with_ansi(..is_terminal()): {chain}",
                    file.display()
                );
            }
            for e in &escapes {
                assert!(!code.contains(e.as_str()), "{}: raw escape {e}", file.display());
            }
        }
    }
}
