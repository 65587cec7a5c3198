//! Shared set-up for the integration tests: a fake registry, a config written for it, and
//! a puller over a fresh store.
#![allow(dead_code)]

pub(crate) mod device;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgepull::app::SetupError;
use edgepull::config::Config;
use edgepull::progress::Silent;
use edgepull::pull::{PullError, PullReport, Puller};
use edgepull::store::Store;
use edgepull_core::oci::{Digest, Platform, Reference};
use edgepull_core::retry::RetryPolicy;
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry, ServerName};

pub(crate) struct Env {
    pub fake: FakeRegistry,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Env {
    pub(crate) fn new(auth: AuthMode) -> Self {
        let fake = FakeRegistry::start_blocking(FakeOptions {
            auth,
            ..Default::default()
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = fake.write_client_files(dir.path());
        Self {
            fake,
            dir,
            config_path,
        }
    }

    pub(crate) fn token() -> Self {
        Self::new(AuthMode::Token {
            user: "device-42".into(),
            pass: "s3cret-device-password".into(),
        })
    }

    pub(crate) fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Edit the written config JSON.
    pub(crate) fn edit_config(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("config json");
        f(&mut v);
        std::fs::write(&self.config_path, serde_json::to_vec_pretty(&v).expect("json"))
            .expect("write config");
    }

    pub(crate) fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap_or_else(|e| panic!("config: {}", edgepull::error_chain(&e)))
    }

    /// A puller over the store, with fast retries.
    pub(crate) fn puller(&self) -> Puller {
        self.try_puller()
            .unwrap_or_else(|e| panic!("puller: {}", edgepull::error_chain(&e)))
    }

    pub(crate) fn try_puller(&self) -> Result<Puller, SetupError> {
        let cfg = self.config();
        let store = rt()
            .block_on(Store::open(&cfg.store.path, Duration::from_secs(5)))
            .expect("open store");
        let mut p = edgepull::app::puller_blocking(&cfg, store, Arc::new(Silent))?;
        p.set_retry(fast_retry());
        Ok(p)
    }

    pub(crate) fn reference(&self, tag: &str) -> Reference {
        Reference::parse(&format!("{}/app:{tag}", self.fake.login_host())).expect("reference")
    }

    pub(crate) fn open_store(&self) -> Store {
        rt().block_on(Store::open(&self.store_path(), Duration::from_secs(5)))
            .expect("open store")
    }

    /// Every request that reached a data endpoint carried no Authorization.
    pub(crate) fn assert_no_auth_at_data_endpoints(&self) {
        for r in self.fake.requests() {
            if matches!(r.server, ServerName::EastUs | ServerName::WestUs) {
                assert_eq!(
                    r.auth_scheme, None,
                    "Authorization reached a data endpoint: {r:?}"
                );
            }
        }
    }

    /// Body bytes the eastus data endpoint sent.
    pub(crate) fn eastus_bytes(&self) -> u64 {
        self.fake
            .requests_to(ServerName::EastUs)
            .iter()
            .map(|r| r.body_bytes_sent)
            .sum()
    }
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(200), Some(6)).expect("retry policy")
}

pub(crate) fn platform(s: &str) -> Platform {
    Platform::parse(s).expect("platform")
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn pull(env: &Env, puller: &Puller, tag: &str) -> Result<PullReport, PullError> {
    rt().block_on(puller.pull(&env.reference(tag)))
}

/// Pull `tag`, expecting a failure of category `want`; returns the error for more checks.
pub(crate) fn pull_err(env: &Env, puller: &Puller, tag: &str, want: edgepull::exit::Category) -> PullError {
    let err = pull(env, puller, tag).expect_err("the pull should fail");
    assert_eq!(err.category(), want, "{}", edgepull::error_chain(&err));
    err
}

/// Blob files under the store's layout.
pub(crate) fn blob_files(store_root: &Path) -> Vec<String> {
    let dir = store_root.join("oci/blobs/sha256");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn has_blob_file(store_root: &Path, d: &Digest) -> bool {
    store_root.join("oci/blobs/sha256").join(d.hex()).exists()
}

/// The binary under test: this build's, or `EDGEPULL_TEST_BIN` run through the optional
/// `EDGEPULL_TEST_RUNNER` (e.g. `qemu-aarch64 -cpu cortex-a53` for a cross-built ARM
/// binary), so the same assertions run on every target.
pub(crate) fn binary() -> std::process::Command {
    let bin = std::env::var_os("EDGEPULL_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_edgepull").into());
    let runner = std::env::var("EDGEPULL_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}
