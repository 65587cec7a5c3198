//! Logging set-up: native journal fields under systemd, readable text on a terminal, JSON
//! lines for log shippers. The same `tracing` events go to all three.
//!
//! Owns: choosing the output ([`LogFormat`], [`stderr_is_journal`]) and the field naming
//! conventions. Events carry their context as fields, never only in the text:
//!
//! | field           | meaning                               | journal field     |
//! |-----------------|---------------------------------------|-------------------|
//! | `image_ref`     | the image (`host/repo:tag`)           | `IMAGE_REF`       |
//! | `digest`        | a manifest or blob digest             | `DIGEST`          |
//! | `previous_digest` | the digest an image switched from   | `PREVIOUS_DIGEST` |
//! | `host`          | the registry host a request went to   | `HOST`            |
//! | `state`         | an image's sync state                 | `STATE`           |
//! | `error`         | the error chain on one line           | `ERROR`           |
//!
//! Older events name the image `reference`; it is mapped to `IMAGE_REF` as well. Field
//! names that would clash with the journal's own (`MESSAGE`, `PRIORITY`, `CODE_*`, ...)
//! get an `EDGEPULL_` prefix. Secrets never reach an event (they are
//! [`edgepull_core::secret::Secret`] and print `[REDACTED]`), and signed URLs are redacted
//! by the registry client.
//!
//! Under systemd, stderr is a stream to journald and `JOURNAL_STREAM` holds its
//! `device:inode`; when that matches stderr, events are sent to the journal socket, one
//! structured entry per event, instead of as text ([`journal`]: the native protocol,
//! written here; `EDGEPULL_JOURNAL_SOCKET` points it at another socket for tests).
//! Every entry has `MESSAGE` (the text with the fields appended, as `journalctl` shows by
//! default), `PRIORITY` (error 3, warn 4, info 5, debug 6, trace 7), `SYSLOG_IDENTIFIER=edgepull`,
//! `SYSLOG_PID`, `CODE_FILE`, `CODE_LINE`, `CODE_MODULE`, `TARGET`, and one field per event
//! field.

mod journal;

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where and how events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The journal when stderr is connected to it, else [`LogFormat::Text`].
    Auto,
    /// Human-readable lines on stderr (colours on a terminal).
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Structured entries sent to the journal socket.
    Journal,
}

/// The environment variable holding the filter (`info` by default), e.g. `edgepull=debug`.
pub(crate) const FILTER_ENV: &str = "EDGEPULL_LOG";

/// Install the global subscriber. `Auto` picks the journal when stderr is the journal;
/// if the journal socket cannot be opened, text on stderr is used (and said so).
pub fn init(format: LogFormat) {
    let filter = || EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    let text = || {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            // stderr, with progress bars (if any) suspended around each line.
            .with_writer(crate::progress::log_writer)
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
    };
    let _ = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .json()
            .finish()
            .try_init(),
        LogFormat::Journal => match journal::Journal::open(std::env::var_os(journal::SOCKET_ENV)) {
            Ok(journal) => tracing_subscriber::registry()
                .with(filter())
                .with(JournalLayer { journal })
                .try_init(),
            Err(e) => {
                let r = text().try_init();
                tracing::warn!(error = %e, "cannot open the journal socket; logging text to stderr");
                r
            }
        },
        LogFormat::Auto | LogFormat::Text => text().try_init(),
    };
}

/// Whether stderr is a stream to journald: `JOURNAL_STREAM` (set by systemd to
/// `device:inode` of the stream it connected) matches stderr.
pub(crate) fn stderr_is_journal() -> bool {
    let Some(env) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&env.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Whether a `JOURNAL_STREAM` value names the stream with this device and inode.
pub(crate) fn journal_stream_matches(
    env: &str,
    dev: impl std::fmt::Display,
    ino: impl std::fmt::Display,
) -> bool {
    let Some((d, i)) = env.trim().split_once(':') else {
        return false;
    };
    !d.is_empty() && d == dev.to_string() && i == ino.to_string()
}

/// Journal fields the logger sets itself; an event field of that name is prefixed.
const RESERVED: [&str; 8] = [
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_PID",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_MODULE",
    "TARGET",
];

/// The journal field name for an event field: upper case, `[A-Z0-9_]` only, not starting
/// with `_` or a digit, at most 64 bytes, not one of the logger's own fields.
pub(crate) fn journal_field_name(field: &str) -> String {
    let field = match field {
        "reference" => "image_ref",
        other => other,
    };
    let mut name: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let bad_start = name.starts_with(|c: char| c == '_' || c.is_ascii_digit()) || name.is_empty();
    if bad_start || RESERVED.contains(&name.as_str()) {
        name = format!("EDGEPULL_{}", name.trim_start_matches('_'));
    }
    name.truncate(64);
    name
}

/// Sends each event to the journal as one entry: `MESSAGE` is the text with the fields
/// appended (`pull complete image_ref=... digest=...`, as `journalctl` shows by default),
/// and every field is also a journal field of its own ([`journal_field_name`]).
struct JournalLayer {
    journal: journal::Journal,
}

/// The syslog priority of a level (as the `log`-based journal loggers map them).
fn priority(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "3",
        tracing::Level::WARN => "4",
        tracing::Level::INFO => "5",
        tracing::Level::DEBUG => "6",
        tracing::Level::TRACE => "7",
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut text = fields.message;
        for (k, v) in &fields.pairs {
            let _ = write!(text, " {k}={v}");
        }
        let pid = std::process::id().to_string();
        let line = meta.line().map(|l| l.to_string());
        let names: Vec<String> = fields.pairs.iter().map(|(k, _)| journal_field_name(k)).collect();
        let standard = [
            ("PRIORITY", Some(priority(*meta.level()))),
            ("MESSAGE", Some(text.as_str())),
            ("SYSLOG_IDENTIFIER", Some("edgepull")),
            ("SYSLOG_PID", Some(pid.as_str())),
            ("CODE_FILE", meta.file()),
            ("CODE_LINE", line.as_deref()),
            ("CODE_MODULE", meta.module_path()),
            ("TARGET", Some(meta.target())),
        ];
        let entry = journal::encode(
            standard.into_iter().filter_map(|(k, v)| Some((k, v?))).chain(
                names
                    .iter()
                    .map(String::as_str)
                    .zip(fields.pairs.iter().map(|(_, v)| v.as_str())),
            ),
        );
        // A lost log line is not worth failing for (and there is nowhere to report it).
        let _ = self.journal.send(&entry);
    }
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((field.name(), format!("{value:?}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_field_names() {
        let cases = [
            ("image_ref", "IMAGE_REF"),
            ("reference", "IMAGE_REF"),
            ("digest", "DIGEST"),
            ("previous_digest", "PREVIOUS_DIGEST"),
            ("host", "HOST"),
            ("retry_in", "RETRY_IN"),
            ("message", "EDGEPULL_MESSAGE"),
            ("priority", "EDGEPULL_PRIORITY"),
            ("target", "EDGEPULL_TARGET"),
            ("_hidden", "EDGEPULL_HIDDEN"),
            ("9lives", "EDGEPULL_9LIVES"),
            ("a.b-c", "A_B_C"),
            ("", "EDGEPULL_"),
        ];
        for (field, want) in cases {
            assert_eq!(journal_field_name(field), want, "{field:?}");
        }
        assert_eq!(journal_field_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn journal_stream_table() {
        let cases = [
            ("8:12345", 8u64, 12345u64, true),
            (" 8:12345\n", 8, 12345, true),
            ("8:12346", 8, 12345, false),
            ("9:12345", 8, 12345, false),
            ("812345", 8, 12345, false),
            (":12345", 8, 12345, false),
            ("", 8, 12345, false),
        ];
        for (env, dev, ino, want) in cases {
            assert_eq!(journal_stream_matches(env, dev, ino), want, "{env:?}");
        }
    }

    #[test]
    fn fields_split_message_and_pairs() {
        use tracing_subscriber::layer::SubscriberExt;
        /// (message, fields) of one event.
        type Event = (String, Vec<(&'static str, String)>);
        #[derive(Clone, Default)]
        struct Seen(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                let mut f = Fields::default();
                event.record(&mut f);
                self.0.lock().unwrap().push((f.message, f.pairs));
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(image_ref = "h/app:1", bytes = 42u64, ok = true, "pull complete");
        });
        let got = seen.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![(
                "pull complete".to_string(),
                vec![
                    ("image_ref", "h/app:1".to_string()),
                    ("bytes", "42".to_string()),
                    ("ok", "true".to_string())
                ]
            )]
        );
    }
}
