//! `Secret`: a password or token that never shows itself.
//!
//! Owns: the type every credential travels in, from the file it was read from (the root
//! crate's `config::load_secret`) to the header it goes into. Must never: print the value
//! (`Debug` and `Display` write `[REDACTED]`), or read it from anywhere (pure: no IO).

use std::fmt;

/// A password or token. `Debug` and `Display` print `[REDACTED]`; read it with
/// [`Secret::expose`] only where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret obtained elsewhere (a secret file, tests, tokens).
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret text, for building a request. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_in_debug_and_display_but_exposed_on_demand() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert!(!format!("{:?}", Some(s.clone())).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
