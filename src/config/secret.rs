//! Secrets read from files (systemd `LoadCredential=`), never from the config itself.
//!
//! Owns: [`load_secret`] (file IO with size and content checks; it returns core's
//! redacted [`Secret`]) and the permission note for secret files. The config only names
//! the files; they are read when a credential is needed, so `edgepull` can check a config
//! outside the service, where `/run/credentials/...` does not exist. Must never log or
//! echo a secret. Blocking: the caller decides where to run it.

use std::io::Read;
use std::path::Path;

use edgepull_core::secret::Secret;

use super::error::{ConfigError, ConfigNote};

/// Largest secret file read. ACR refresh tokens are a few KiB.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Read a secret from `path` (blocking file IO): at most 64 KiB of UTF-8, one trailing
/// `\n` or `\r\n` removed. Refuses an empty secret and one with other control characters
/// (a second line, a stray `\r`), which would corrupt the `Authorization` header or form
/// body.
pub(crate) fn load_secret(path: &Path) -> Result<Secret, ConfigError> {
    let fail = |problem: String| ConfigError::Secret {
        file: path.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        fail(format!(
            "cannot open it: {e}; check the path and that the service can read it (systemd: LoadCredential=)"
        ))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(fail(format!(
            "it is larger than {} KiB; it must hold only the password or token",
            MAX_SECRET_BYTES / 1024
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| fail("it is not UTF-8 text; write the password or token as text".to_string()))?;
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if trimmed.is_empty() {
        return Err(fail(
            "it is empty; write the password or token into it (one trailing newline is ignored)".to_string(),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(fail(
            "it contains a line break or other control character besides one trailing newline; \
             the file must hold only the password or token"
                .to_string(),
        ));
    }
    Ok(Secret::new(trimmed.to_string()))
}

/// A note when the secret file at `path` exists and can be read by its group or by
/// anyone (`chmod 0600`, or let systemd's `LoadCredential=` provide it). `None` when the
/// file is missing (it may only exist inside the service) or is private.
pub(super) fn permission_note(field: &str, path: &Path) -> Option<ConfigNote> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = file_mode(&meta)?;
    (mode & 0o044 != 0).then(|| ConfigNote {
        field: field.to_string(),
        message: format!(
            "secret file {} is readable by its group or by others (mode {:03o}); \
             run `chmod 0600 {}` or provide it with systemd LoadCredential=",
            path.display(),
            mode & 0o777,
            path.display()
        ),
    })
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn trims_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 4] = [
            (b"hunter2", "hunter2"),
            (b"hunter2\n", "hunter2"),
            (b"hunter2\r\n", "hunter2"),
            (b"  spaced pass  \n", "  spaced pass  "),
        ];
        for (i, (content, want)) in cases.into_iter().enumerate() {
            let p = write(&dir, &format!("s{i}"), content);
            assert_eq!(load_secret(&p).unwrap().expose(), want);
        }
    }

    #[test]
    fn refuses_empty_multiline_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content, needle) in [
            ("empty", &b""[..], "empty"),
            ("nl", b"\n", "empty"),
            ("two", b"hunter2\n\n", "line break"),
            ("lines", b"a\nb\n", "line break"),
            ("cr", b"hunter2\r", "control"),
            ("bin", b"\xff\xfe", "UTF-8"),
        ] {
            let p = write(&dir, name, content);
            let err = load_secret(&p).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, ConfigError::Secret { ref file, .. } if *file == p),
                "{name}"
            );
            assert!(msg.contains(needle), "{name}: {msg}");
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
        let big = write(&dir, "big", &vec![b'a'; 64 * 1024 + 1]);
        assert!(load_secret(&big).unwrap_err().to_string().contains("larger"));
        let missing = dir.path().join("nope");
        assert!(
            load_secret(&missing)
                .unwrap_err()
                .to_string()
                .contains("cannot open")
        );
    }

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "s", b"hunter2\n");
        let s = load_secret(&p).unwrap();
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert!(!format!("{:?}", Some(s)).contains("hunter2"));
    }

    #[cfg(unix)]
    #[test]
    fn notes_group_or_world_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "s", b"x");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(permission_note("registry.auth.password_file", &p), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let note = permission_note("registry.auth.password_file", &p).unwrap();
        assert_eq!(note.field, "registry.auth.password_file");
        assert!(
            note.message.contains("640") && note.message.contains("chmod 0600"),
            "{note}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(permission_note("f", &p).is_some());
        assert_eq!(permission_note("f", &dir.path().join("absent")), None);
    }
}
