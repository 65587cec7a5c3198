//! The journal output of `edgepull run`, read back as journald would get it: the test
//! binds its own `AF_UNIX` datagram socket (`EDGEPULL_JOURNAL_SOCKET`), starts the real
//! binary with stderr on a file whose device and inode it puts in `JOURNAL_STREAM` (so
//! `--log-format auto` picks the journal, as under systemd), runs a full pull cycle and
//! decodes every datagram of the native protocol (`KEY=value` lines and the
//! length-prefixed form for values with a newline).

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, platform};
use edgepull_testkit::{AuthMode, random_bytes};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_edgepull");

/// One journal entry: its fields in order (a field may repeat).
type Entry = Vec<(String, Vec<u8>)>;

/// Decode one datagram of the native protocol; panics on anything malformed.
fn decode(mut d: &[u8]) -> Entry {
    let mut fields = Vec::new();
    while !d.is_empty() {
        let end = d
            .iter()
            .position(|b| *b == b'=' || *b == b'\n')
            .unwrap_or_else(|| panic!("field without = or newline: {d:?}"));
        let name = String::from_utf8(d[..end].to_vec()).expect("field name is UTF-8");
        let value;
        if d[end] == b'=' {
            let rest = &d[end + 1..];
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .expect("value ends in a newline");
            value = rest[..nl].to_vec();
            d = &rest[nl + 1..];
        } else {
            let rest = &d[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("8-byte length")) as usize;
            value = rest[8..8 + len].to_vec();
            assert_eq!(rest[8 + len], b'\n', "binary value of {name} ends in a newline");
            d = &rest[8 + len + 1..];
        }
        fields.push((name, value));
    }
    fields
}

fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).expect("UTF-8 value"))
}

fn message(e: &Entry) -> &str {
    field(e, "MESSAGE").unwrap_or("")
}

/// The first entry whose message starts with `prefix`.
fn entry<'a>(entries: &'a [Entry], prefix: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| message(e).starts_with(prefix))
        .unwrap_or_else(|| {
            let all: Vec<&str> = entries.iter().map(message).collect();
            panic!("no entry {prefix:?} among {all:#?}")
        })
}

/// Field names journald accepts: `[A-Z0-9_]`, not starting with `_` or a digit, ≤ 64 bytes.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c == '_' || c.is_ascii_digit())
}

/// A fake journald: every datagram sent to the socket, raw.
struct Journald {
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Journald {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind the journal socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let datagrams: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (datagrams, stop) = (datagrams.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        datagrams.lock().unwrap().push(buf[..n].to_vec());
                    }
                }
            })
        };
        Self {
            datagrams,
            stop,
            reader: Some(reader),
        }
    }

    /// Stop reading; every datagram received, raw.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        std::mem::take(&mut *self.datagrams.lock().unwrap())
    }
}

/// `edgepull run` with `env`'s config as systemd would start it with its output going to
/// the journal: `JOURNAL_STREAM` names the stderr file (so `--log-format auto` picks the
/// journal), and the journal socket is a fake journald. `configure` adds arguments or
/// variables. Returns the journald, the stderr file's path and the child.
fn run_under_journal(
    env: &Env,
    configure: impl FnOnce(&mut Command),
) -> (Journald, std::path::PathBuf, std::process::Child) {
    let socket = env.dir.path().join("journal.socket");
    let journald = Journald::bind(&socket);
    let stderr_path = env.dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&env.config_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("EDGEPULL_JOURNAL_SOCKET", &socket)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    configure(&mut cmd);
    let child = cmd.spawn().expect("start edgepull run");
    (journald, stderr_path, child)
}

/// A full cycle of `edgepull run` under `auth` with the journal on, at trace level: the
/// first pull of `app:stable`, a hook that cannot start (its program name holds a
/// newline: a value journald gets length-prefixed), then SIGTERM. Returns the decoded
/// entries, the raw datagrams, the secrets involved, stderr, and what the entries must
/// name.
struct Cycle {
    entries: Vec<Entry>,
    raw: Vec<Vec<u8>>,
    secrets: Vec<String>,
    stderr: String,
    pid: u32,
    image: String,
    digest: String,
    store: String,
    hook: String,
}

fn cycle(auth: AuthMode) -> Cycle {
    let env = Env::new(auth.clone());
    let hook = env.dir.path().join("no such\nhook").display().to_string();
    env.edit_config(|v| {
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 3600 }]);
        v["store"]["min_free_bytes"] = json!(0);
        v["hooks"] = json!({ "on_update": [hook], "timeout_secs": 5 });
    });
    let (v1, _) = env.fake.push_image_for(
        "app",
        "stable",
        &platform("linux/arm64"),
        vec![random_bytes(300_000)],
    );
    env.fake.set_cut_after(Some((100_000, 1)));
    let (journald, stderr_path, mut child) = run_under_journal(&env, |c| {
        c.args(["--log-format", "auto"]).env("EDGEPULL_LOG", "trace");
    });
    let pid = child.id();
    let store = env.store_path();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hook_recorded =
            edgepull::daemon::status::read(&store).is_ok_and(|s| s.images[0].last_hook.is_some());
        if hook_recorded {
            break;
        }
        assert!(Instant::now() < deadline, "no pull and hook within 20 s");
        assert!(child.try_wait().unwrap().is_none(), "edgepull run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let raw = journald.finish();
    let entries: Vec<Entry> = raw.iter().filter(|d| !d.is_empty()).map(|d| decode(d)).collect();
    let mut secrets: Vec<String> = match &auth {
        AuthMode::Anonymous => vec![],
        AuthMode::Basic { pass, .. } | AuthMode::Token { pass, .. } => vec![pass.clone()],
        AuthMode::RefreshToken { refresh_token } => vec![refresh_token.clone()],
    };
    let tokens = env.fake.issued_tokens();
    let signatures = env.fake.link_signatures();
    if !matches!(auth, AuthMode::Basic { .. }) {
        assert!(!tokens.is_empty(), "{auth:?}: no token issued");
    }
    assert!(
        signatures.len() >= 2,
        "{auth:?}: a cut download takes two signed links"
    );
    secrets.extend(tokens);
    secrets.extend(signatures);
    Cycle {
        entries,
        raw,
        secrets,
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
        pid,
        image: format!("{}/app:stable", env.fake.login_host()),
        digest: v1.to_string(),
        store: store.display().to_string(),
        hook,
    }
}

#[test]
fn the_journal_gets_structured_entries_for_a_full_cycle_and_no_secret() {
    let modes = [
        AuthMode::Token {
            user: "device-42".into(),
            pass: "s3cret-device-password".into(),
        },
        AuthMode::RefreshToken {
            refresh_token: "s3cret-acr-refresh-token".into(),
        },
        AuthMode::Basic {
            user: "device-42".into(),
            pass: "s3cret-basic-password".into(),
        },
    ];
    for auth in modes {
        let c = cycle(auth.clone());
        // JOURNAL_STREAM matched stderr: nothing went there as text.
        assert_eq!(c.stderr, "", "{auth:?}");
        assert!(c.entries.len() > 20, "{auth:?}: {} entries", c.entries.len());

        // Every entry: one message, a priority, edgepull's identity, the source.
        let pid = c.pid.to_string();
        for e in &c.entries {
            for (name, _) in e {
                assert!(valid_name(name), "{auth:?}: field name {name:?} in {e:?}");
            }
            assert_eq!(e.iter().filter(|(k, _)| k == "MESSAGE").count(), 1, "{e:?}");
            assert!(
                matches!(field(e, "PRIORITY"), Some("3" | "4" | "5" | "6" | "7")),
                "{e:?}"
            );
            assert_eq!(field(e, "SYSLOG_IDENTIFIER"), Some("edgepull"), "{e:?}");
            assert_eq!(field(e, "SYSLOG_PID"), Some(pid.as_str()), "{e:?}");
            assert!(field(e, "TARGET").is_some(), "{e:?}");
        }
        // Trace level reaches the journal too (edgepull's libraries included).
        assert!(c.entries.iter().any(|e| field(e, "PRIORITY") == Some("7")));

        let ready = entry(&c.entries, "edgepull daemon ready");
        assert_eq!(field(ready, "PRIORITY"), Some("5"));
        assert_eq!(field(ready, "IMAGES"), Some("1"));
        assert_eq!(field(ready, "STORE"), Some(c.store.as_str()));
        assert_eq!(field(ready, "TARGET"), Some("edgepull::daemon"));
        assert!(field(ready, "CODE_FILE").is_some_and(|f| f.ends_with("daemon/mod.rs")));
        assert!(field(ready, "CODE_LINE").is_some_and(|l| l.parse::<u32>().is_ok()));
        assert_eq!(field(ready, "CODE_MODULE"), Some("edgepull::daemon"));

        let planning = entry(&c.entries, "planning pull");
        assert_eq!(field(planning, "IMAGE_REF"), Some(c.image.as_str()));
        assert_eq!(field(planning, "REASON"), Some("new"));

        let cut = entry(&c.entries, "blob transfer interrupted; will resume");
        assert_eq!(field(cut, "PRIORITY"), Some("4"));
        assert!(
            field(cut, "HOST").is_some_and(|h| h.contains(".eastus.data.")),
            "{cut:?}"
        );

        let updated = entry(&c.entries, "image updated");
        assert_eq!(field(updated, "PRIORITY"), Some("5"));
        assert_eq!(field(updated, "IMAGE_REF"), Some(c.image.as_str()));
        assert_eq!(field(updated, "DIGEST"), Some(c.digest.as_str()));
        assert_eq!(field(updated, "PREVIOUS_DIGEST"), Some(""));
        assert!(field(updated, "BYTES_RECEIVED").is_some_and(|b| b.parse::<u64>().unwrap() >= 300_000));
        let text = format!("image updated image_ref={} digest={}", c.image, c.digest);
        assert!(message(updated).starts_with(&text), "{:?}", message(updated));

        // The hook's program name holds a newline: sent length-prefixed, decoded exactly.
        let hook = entry(&c.entries, "update hook could not run");
        assert_eq!(field(hook, "PRIORITY"), Some("4"));
        assert_eq!(field(hook, "PROGRAM"), Some(c.hook.as_str()));
        assert!(
            field(hook, "ERROR").is_some_and(|e| e.contains("cannot start")),
            "{hook:?}"
        );

        let stopping = entry(&c.entries, "stopping");
        assert_eq!(field(stopping, "SIGNAL"), Some("SIGTERM"));
        entry(&c.entries, "edgepull daemon stopped");

        // No secret in any byte sent to the journal.
        for datagram in &c.raw {
            let bytes = String::from_utf8_lossy(datagram);
            for secret in &c.secrets {
                assert!(
                    !bytes.contains(secret.as_str()),
                    "{auth:?}: {secret:?} in {bytes}"
                );
            }
            for key in ["sig=", "se="] {
                for (i, _) in bytes.match_indices(key) {
                    assert!(
                        bytes[i + key.len()..].starts_with("REDACTED"),
                        "{auth:?}: {bytes}"
                    );
                }
            }
            assert!(
                !bytes.to_ascii_lowercase().contains("bearer "),
                "{auth:?}: {bytes}"
            );
        }
    }
}

#[test]
fn the_decoder_reads_both_forms() {
    let mut d = b"A=1\nB\n".to_vec();
    d.extend_from_slice(&4u64.to_le_bytes());
    d.extend_from_slice(b"x\ny=\nC=\n");
    assert_eq!(
        decode(&d),
        vec![
            ("A".to_string(), b"1".to_vec()),
            ("B".to_string(), b"x\ny=".to_vec()),
            ("C".to_string(), b"".to_vec()),
        ]
    );
}

/// A rollback reaches the journal as an error entry naming the image, the failed digest,
/// the restored one and how the check ended.
#[test]
fn a_rollback_is_an_error_entry_with_both_digests() {
    let env = Env::new(AuthMode::Anonymous);
    let flag = env.dir.path().join("unhealthy");
    let check = format!("test ! -e {}", flag.display());
    env.edit_config(|v| {
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 1 }]);
        v["sync"] = json!({ "jitter": 0.0 });
        v["store"]["min_free_bytes"] = json!(0);
        v["hooks"] = json!({ "health_check": ["/bin/sh", "-c", check], "health_timeout_secs": 5 });
    });
    let arm64 = platform("linux/arm64");
    let (v1, _) = env
        .fake
        .push_image_for("app", "stable", &arm64, vec![random_bytes(2000)]);
    let (journald, _stderr, mut child) = run_under_journal(&env, |_| {});
    let store = env.store_path();
    let image = || {
        edgepull::daemon::status::read(&store)
            .ok()
            .map(|s| s.images[0].clone())
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what} not within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("v1 checked", &|| {
        image().is_some_and(|i| i.last_health_check.is_some_and(|h| h.ok))
    });
    std::fs::write(&flag, "").unwrap();
    let (v2, _) = env
        .fake
        .push_image_for("app", "v2", &arm64, vec![random_bytes(2001)]);
    env.fake.move_tag("app", "stable", v2);
    wait("the rollback", &|| {
        image().is_some_and(|i| i.failed_digest == Some(v2.to_string()))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let entries: Vec<Entry> = journald
        .finish()
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| decode(d))
        .collect();
    let e = entry(
        &entries,
        "health check failed: rolled back to the previous version",
    );
    assert_eq!(field(e, "PRIORITY"), Some("3"), "{e:?}");
    assert_eq!(
        field(e, "IMAGE_REF"),
        Some(format!("{}/app:stable", env.fake.login_host()).as_str())
    );
    assert_eq!(field(e, "DIGEST"), Some(v2.to_string().as_str()));
    assert_eq!(field(e, "RESTORED_DIGEST"), Some(v1.to_string().as_str()));
    assert_eq!(field(e, "CHECK"), Some("failed"));
    let check_entry = entry(&entries, "health check failed; counted as failed");
    assert_eq!(field(check_entry, "EXIT_CODE"), Some("1"), "{check_entry:?}");
}
