//! The edgepull demo: a fake Azure Container Registry on loopback (login server, token
//! realm, data endpoints for eastus and westus, all TLS) and the real pull path against it.
//!
//! `cargo run --release --example demo` pulls a multi-arch image as an arm64 device in
//! eastus — with progress, one dropped connection that resumes with a `Range` request, and
//! the store listed and verified — then shows the refusal of a redirect to westus, and
//! signed updates: with `signatures.public_keys` set, a release signed by the fleet's key
//! (cosign format) is adopted and an unsigned one is refused (exit code 11).
//!
//! `cargo run --release --example demo -- --serve DIR` only starts the registry (same
//! image), writes `DIR/config.json` for the `edgepull` binary, and waits for Ctrl-C: for
//! trying the CLI by hand and for measuring it (`/usr/bin/time -v edgepull pull ...`).
//! `DEMO_LAYER_MIB` sets the size of the big arm64 layer (default 48).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgepull::config::Config;
use edgepull::progress::{Bars, LogLines, Progress};
use edgepull::store::Store;
use edgepull_core::oci::{Digest, Platform, Reference};
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry, ServerName, random_bytes};

const REPO: &str = "app";

#[path = "../tests/common/signing.rs"]
mod signing;

fn push_demo_image(fake: &FakeRegistry, tag: &str, big_mib: usize) -> Digest {
    let p = |s: &str| Platform::parse(s).expect("valid demo platform");
    fake.push_index(
        REPO,
        tag,
        vec![
            (
                p("linux/amd64"),
                vec![random_bytes(2 << 20), random_bytes(512 << 10)],
            ),
            (
                p("linux/arm64/v8"),
                vec![
                    random_bytes(big_mib << 20),
                    random_bytes(3 << 20),
                    random_bytes(300 << 10),
                ],
            ),
            (p("linux/arm/v7"), vec![random_bytes(2 << 20)]),
        ],
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEPULL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(edgepull::progress::log_writer)
        // Colour only on a terminal: a redirected log must hold no escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let big_mib: usize = std::env::var("DEMO_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let fake = FakeRegistry::start_blocking(FakeOptions {
        auth: AuthMode::Token {
            user: "device-42".into(),
            pass: hex_token(),
        },
        ..Default::default()
    });
    push_demo_image(&fake, "1.2", big_mib);

    if args.first().map(String::as_str) == Some("--serve") {
        let dir = PathBuf::from(args.get(1).ok_or("usage: demo --serve DIR")?);
        return serve(&fake, &dir);
    }

    let work = tempfile::tempdir()?;
    let config_path = fake.write_client_files(work.path());
    println!("edgepull demo");
    println!("  login server   {}", fake.login_host());
    println!(
        "  data endpoint  {} (eastus, the device's region)",
        fake.data_endpoint("eastus")
    );
    println!(
        "  other region   {} (westus: must never be contacted)",
        fake.data_endpoint("westus")
    );
    println!("  store          {}\n", work.path().join("store").display());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cfg = Config::load(&config_path)?;
        let store = Store::open(&cfg.store.path, cfg.store.lock_wait).await?;
        let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
            Arc::new(Bars::new())
        } else {
            Arc::new(LogLines::new(Duration::from_secs(2)))
        };
        let puller = edgepull::app::puller(&cfg, store.clone(), progress).await?;

        // A slow, flaky link: 64 MiB/s, and the first blob body is cut half-way.
        fake.update_knobs(|k| {
            k.rate_limit = Some(64 << 20);
            k.cut_after = Some(((big_mib as u64) << 19, 1));
        });
        let reference = Reference::parse_with_default(&format!("{REPO}:1.2"), &cfg.registry.login_server)?;
        println!(
            "1) pull {reference} as {} (one connection is cut half-way)",
            cfg.platform
        );
        let report = puller.pull(&reference).await?;
        println!(
            "   {} -> {} ({})",
            report.reference,
            report.manifest.digest,
            report
                .platform
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default()
        );
        println!(
            "   {} blobs, {} bytes received, {} bytes fetched twice\n",
            report.blobs, report.bytes_received, report.bytes_refetched
        );
        let ranged: Vec<_> = fake
            .requests_to(ServerName::EastUs)
            .into_iter()
            .filter_map(|r| r.range)
            .collect();
        println!(
            "   resumed with: {}",
            if ranged.is_empty() {
                "(no Range request)".to_string()
            } else {
                ranged.join(", ")
            }
        );
        let auth_to_data = fake
            .requests()
            .iter()
            .filter(|r| {
                matches!(r.server, ServerName::EastUs | ServerName::WestUs) && r.auth_scheme.is_some()
            })
            .count();
        println!("   requests with Authorization at data endpoints: {auth_to_data}\n");

        println!("2) store list");
        for image in store.images().await? {
            println!("   {}\t{}", image.ref_name, image.descriptor.digest);
        }
        let verify = store.verify().await?;
        println!(
            "   store verify: {} blobs checked, {} corrupt\n",
            verify.checked,
            verify.corrupt.len()
        );

        println!("3) the login server now redirects blobs to westus");
        push_demo_image(&fake, "1.3", 1);
        fake.update_knobs(|k| {
            k.redirect_region = "westus".into();
            k.cut_after = None;
        });
        let next = Reference::parse_with_default(&format!("{REPO}:1.3"), &cfg.registry.login_server)?;
        match puller.pull(&next).await {
            Ok(r) => println!("   UNEXPECTED: pulled {}", r.manifest.digest),
            Err(e) => {
                println!("   refused: {}", edgepull::error_chain(&e));
                println!("   exit code a CLI pull would return: {}", e.category().code());
            }
        }
        println!(
            "   connections made to westus: {}\n",
            fake.connections(ServerName::WestUs)
        );

        println!("4) signed updates: signatures.public_keys = [release.pub]");
        fake.update_knobs(|k| k.redirect_region = "eastus".into());
        let signer = signing::Signer::new();
        let key = signer.write_public(work.path(), "release.pub");
        let mut raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        raw["signatures"] = serde_json::json!({ "public_keys": [key] });
        let signed_config = work.path().join("config-signed.json");
        std::fs::write(&signed_config, serde_json::to_vec_pretty(&raw)?)?;
        let cfg = Config::load(&signed_config)?;
        let puller = edgepull::app::puller(&cfg, store.clone(), Arc::new(edgepull::progress::Silent)).await?;
        let repository = format!("{}/{REPO}", fake.login_host());
        let signed = push_demo_image(&fake, "2.0", 1);
        let payload = signing::payload(&repository, &signed);
        let signature = signer.sign(&payload);
        signing::push_signatures(&fake, REPO, &signed, &[(payload, signature)]);
        let unsigned = push_demo_image(&fake, "2.1", 1);
        println!(
            "   {REPO}:2.0 -> {signed}, signed by release.pub (tag {})",
            edgepull_core::signature::signature_tag(&signed)
        );
        println!("   {REPO}:2.1 -> {unsigned}, not signed");
        for tag in ["2.0", "2.1"] {
            let r = Reference::parse_with_default(&format!("{REPO}:{tag}"), &cfg.registry.login_server)?;
            match puller.pull(&r).await {
                Ok(report) => println!(
                    "   pull {REPO}:{tag}: adopted {} (signature verified)",
                    report.manifest.digest
                ),
                Err(e) => {
                    println!("   pull {REPO}:{tag}: refused: {}", edgepull::error_chain(&e));
                    println!("   exit code a CLI pull would return: {}", e.category().code());
                }
            }
        }
        let listed: Vec<String> = store.images().await?.into_iter().map(|i| i.ref_name).collect();
        println!("   store list: {}", listed.join(", "));
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

fn serve(fake: &FakeRegistry, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = fake.try_write_client_files(dir, "eastus")?;
    println!("fake registry up; config written to {}", config.display());
    println!(
        "try: edgepull pull --config {} {}/{REPO}:1.2",
        config.display(),
        fake.login_host()
    );
    println!("press Ctrl-C to stop");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    Ok(())
}

fn hex_token() -> String {
    random_bytes(16).iter().map(|b| format!("{b:02x}")).collect()
}
