//! Malformed configs from the user's view: the real binary, `edgepull --config F pull
//! app:x`, and for each case the exit code and the fragments of its message that name the
//! field, the value and the fix. `src/config/tests.rs` checks every validation rule against
//! the error variants; this table checks what an operator sees, end to end (including the
//! file-level failures no variant test reaches: empty, non-UTF-8, oversized, missing, and
//! secret files that exist but cannot be used).
//!
//! No case touches the network: every config here is refused before a request is made.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_edgepull");
/// A secret that must never appear in any output.
const SECRET: &str = "hunter2-do-not-print";

/// What the config file holds.
enum Input {
    /// The base config with a patch applied (written pretty-printed).
    Patch(fn(&mut Value, &Path)),
    /// These exact bytes.
    Raw(Vec<u8>),
    /// No file at all.
    Missing,
}

struct Case {
    name: &'static str,
    input: Input,
    /// The reference given to `pull` (the base config has no `images`).
    reference: &'static str,
    code: i32,
    /// Every fragment must be in stderr.
    fragments: &'static [&'static str],
}

/// A valid config: anonymous pull from contoso.azurecr.io in eastus, store under `dir`.
fn base(dir: &Path) -> Value {
    json!({
        "registry": {"login_server": "contoso.azurecr.io", "region": "eastus"},
        "store": {"path": dir.join("store").to_string_lossy()},
        "platform": "linux/arm64",
    })
}

fn secret_file(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p.to_string_lossy().into_owned()
}

fn basic_auth(v: &mut Value, password_file: String) {
    v["registry"]["auth"] = json!({"username": "device-42", "password_file": password_file});
}

fn cases() -> Vec<Case> {
    use Input::*;
    let c = |name, input, code, fragments| Case {
        name,
        input,
        reference: "app:x",
        code,
        fragments,
    };
    vec![
        c(
            "unknown top-level field",
            Patch(|v, _| v["bogus"] = json!(1)),
            78,
            &[
                "line 2, column 9",
                "at bogus",
                "unknown field `bogus`",
                "expected one of",
                "`registry`",
            ],
        ),
        c(
            "unknown nested field with its JSON path",
            Patch(|v, _| v["registry"]["auth"] = json!({"usrname": "u", "password_file": "/p"})),
            78,
            &[
                "at registry.auth.usrname",
                "unknown field `usrname`",
                "`username`",
            ],
        ),
        c(
            "wrong type: number as a string",
            Patch(|v, _| v["concurrency"] = json!("3")),
            78,
            &["at concurrency", "expected u64", "\"3\""],
        ),
        c(
            "wrong type: images as an object",
            Patch(|v, _| v["images"] = json!({"ref": "app:1"})),
            78,
            &["at images", "expected a sequence"],
        ),
        c(
            "out of range: concurrency 0",
            Patch(|v, _| v["concurrency"] = json!(0)),
            78,
            &["concurrency = 0", "1", "16"],
        ),
        c(
            "out of range: concurrency 17",
            Patch(|v, _| v["concurrency"] = json!(17)),
            78,
            &["concurrency = 17", "16"],
        ),
        c(
            "out of range: idle_read_secs 0",
            Patch(|v, _| v["timeouts"] = json!({"idle_read_secs": 0})),
            78,
            &["timeouts.idle_read_secs = 0", "3600"],
        ),
        c(
            "negative checkpoint_bytes",
            Patch(|v, _| v["store"]["checkpoint_bytes"] = json!(-1)),
            78,
            &["at store.checkpoint_bytes", "-1"],
        ),
        c(
            "relative store path",
            Patch(|v, _| v["store"]["path"] = json!("var/lib/edgepull")),
            78,
            &["store.path = \"var/lib/edgepull\"", "absolute path"],
        ),
        c(
            "relative ca_file",
            Patch(|v, _| v["registry"]["ca_file"] = json!("ca.pem")),
            78,
            &["registry.ca_file = \"ca.pem\"", "absolute path"],
        ),
        c(
            "relative password_file",
            Patch(|v, _| basic_auth(v, "password".into())),
            78,
            &["registry.auth.password_file = \"password\"", "absolute path"],
        ),
        c(
            "wildcard data endpoint",
            Patch(|v, _| v["registry"]["data_endpoints"] = json!(["*.blob.core.windows.net"])),
            78,
            &[
                "registry.data_endpoints[0] = \"*.blob.core.windows.net\"",
                "dedicated data endpoints",
            ],
        ),
        c(
            "storage host as data endpoint",
            Patch(|v, _| v["registry"]["data_endpoints"] = json!(["contoso.blob.core.windows.net"])),
            78,
            &[
                "registry.data_endpoints[0] = \"contoso.blob.core.windows.net\"",
                "Azure Storage",
            ],
        ),
        c(
            "data endpoint of another region",
            Patch(|v, _| v["registry"]["data_endpoints"] = json!(["contoso.westus.data.azurecr.io"])),
            78,
            &[
                "registry.data_endpoints[0] = \"contoso.westus.data.azurecr.io\"",
                "eastus",
            ],
        ),
        c(
            "inline password",
            Patch(|v, _| v["registry"]["auth"] = json!({"username": "u", "password": SECRET})),
            78,
            &[
                "registry.auth.password",
                "(not shown)",
                "password_file",
                "LoadCredential",
            ],
        ),
        c(
            "inline refresh token",
            Patch(|v, _| v["registry"]["auth"] = json!({"refresh_token": SECRET})),
            78,
            &["registry.auth.refresh_token", "refresh_token_file"],
        ),
        c(
            "secret file missing",
            Patch(|v, d| basic_auth(v, d.join("absent").to_string_lossy().into_owned())),
            78,
            &["secret file", "absent", "cannot open it", "LoadCredential"],
        ),
        c(
            "secret file is a directory (unreadable)",
            Patch(|v, d| basic_auth(v, d.to_string_lossy().into_owned())),
            78,
            &["secret file", "cannot read it"],
        ),
        c(
            "secret file empty",
            Patch(|v, d| basic_auth(v, secret_file(d, "empty", b""))),
            78,
            &["secret file", "empty", "write the password or token into it"],
        ),
        c(
            "secret file with two lines",
            Patch(|v, d| basic_auth(v, secret_file(d, "two", format!("{SECRET}\nmore\n").as_bytes()))),
            78,
            &["secret file", "line break"],
        ),
        c(
            "bad region",
            Patch(|v, _| v["registry"]["region"] = json!("East US")),
            78,
            &["registry.region = \"East US\"", "lower-case", "eastus"],
        ),
        c(
            "login server given as a URL",
            Patch(|v, _| v["registry"]["login_server"] = json!("https://contoso.azurecr.io")),
            78,
            &[
                "registry.login_server = \"https://contoso.azurecr.io\"",
                "host[:port]",
            ],
        ),
        c(
            "bad image reference",
            Patch(|v, _| v["images"] = json!([{"ref": "app:bad tag"}])),
            78,
            &["images[0].ref = \"app:bad tag\""],
        ),
        c(
            "image on another registry",
            Patch(|v, _| v["images"] = json!([{"ref": "other.azurecr.io/app:1"}])),
            78,
            &[
                "images[0].ref = \"other.azurecr.io/app:1\"",
                "registry.login_server is contoso.azurecr.io",
                "write contoso.azurecr.io/app:1 or just app:1",
            ],
        ),
        c(
            "duplicate image names",
            Patch(|v, _| v["images"] = json!([{"ref": "app:1"}, {"ref": "contoso.azurecr.io/app:1"}])),
            78,
            &["images[1].ref = \"contoso.azurecr.io/app:1\"", "listed twice"],
        ),
        c(
            "bad platform",
            Patch(|v, _| v["platform"] = json!("arm64")),
            78,
            &["platform = \"arm64\"", "leave it out"],
        ),
        c(
            "resolve pin for a host outside the allowlist",
            Patch(|v, _| v["registry"]["resolve"] = json!({"evil.example": "10.0.0.1"})),
            78,
            &["registry.resolve", "evil.example"],
        ),
        c(
            "proxy with credentials in it",
            Patch(|v, _| v["registry"]["proxy"] = json!(format!("http://user:{SECRET}@proxy.local:3128"))),
            78,
            &[
                "registry.proxy = \"http://(credentials not shown)@proxy.local:3128/\"",
                "would be a secret in the config",
                "http://proxy.local:3128",
            ],
        ),
        c(
            "blob_source unknown",
            Patch(|v, _| v["registry"]["blob_source"] = json!("both")),
            78,
            &[
                "registry.blob_source = \"both\"",
                "\"data-endpoint\"",
                "\"registry\"",
            ],
        ),
        c(
            "registry section missing",
            Raw(b"{}".to_vec()),
            78,
            &["registry is missing", "login_server"],
        ),
        c(
            "malformed JSON with line and column",
            Raw(b"{\n  \"registry\": {\n    \"login_server\": \"contoso.azurecr.io\",\n  }\n}\n".to_vec()),
            78,
            &["line 4, column 3", "at registry"],
        ),
        c(
            "JSON array at the top level",
            Raw(b"[]".to_vec()),
            78,
            &["the top level", "expected struct"],
        ),
        c(
            "empty file",
            Raw(Vec::new()),
            78,
            &["line 1, column 0", "the top level", "EOF"],
        ),
        c(
            "non-UTF-8 bytes",
            Raw(b"{\"registry\": {\"login_server\": \"contoso\xff\xfe.azurecr.io\"}}".to_vec()),
            78,
            &["cannot read config file", "UTF-8"],
        ),
        c(
            "2 MiB file",
            Raw({
                let mut v = b"{\"registry\":{\"login_server\":\"contoso.azurecr.io\",\"region\":\"eastus\"}}"
                    .to_vec();
                v.resize(2 << 20, b' ');
                v
            }),
            78,
            &["cannot read config file", "larger than 1024 KiB"],
        ),
        c(
            "config file missing",
            Missing,
            78,
            &["cannot read config file", "--config", "EDGEPULL_CONFIG"],
        ),
        Case {
            name: "valid config, reference on another registry (usage, not config)",
            input: Patch(|_, _| {}),
            reference: "other.azurecr.io/app:x",
            code: 2,
            fragments: &[
                "names registry other.azurecr.io",
                "configured login server is contoso.azurecr.io",
            ],
        },
    ]
}

/// Write `input` into `dir` and run `edgepull --config <file> pull <reference>`.
fn run(dir: &Path, input: &Input, reference: &str) -> (Option<i32>, String) {
    let file: PathBuf = dir.join("config.json");
    match input {
        Input::Patch(patch) => {
            let mut v = base(dir);
            patch(&mut v, dir);
            std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        }
        Input::Raw(bytes) => std::fs::write(&file, bytes).unwrap(),
        Input::Missing => {}
    }
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["--log-format", "text", "pull", "--no-progress", reference])
        .env("EDGEPULL_LOG", "debug")
        .output()
        .expect("run edgepull");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn malformed_configs_exit_with_a_message_naming_field_value_and_fix() {
    let cases = cases();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let (code, text) = run(dir.path(), &case.input, case.reference);
        // The table for the closing note: case | exit | first error line.
        let first = text.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        println!(
            "| {} | {} | {} |",
            case.name,
            code.unwrap_or(-1),
            first.replace('|', "\\|")
        );
        let mut problems = Vec::new();
        if code != Some(case.code) {
            problems.push(format!("exit {code:?}, want {}", case.code));
        }
        for f in case.fragments {
            if !text.contains(f) {
                problems.push(format!("{f:?} missing"));
            }
        }
        if text.contains(SECRET) {
            problems.push("the secret was printed".to_string());
        }
        if text.contains("panicked") {
            problems.push("panicked".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{text}", case.name, problems.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
