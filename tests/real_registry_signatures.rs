//! Signed updates against the real registry (distribution 2.8, nginx data endpoints,
//! skopeo): signatures are written byte for byte in cosign's format by a Python signer
//! (`real_registry/cosign.py`, python3-cryptography: Debian's skopeo has sigstore disabled
//! and cosign is not packaged), pushed with skopeo as tag `sha256-<hex>.sig`, and every
//! case is judged twice: by the real `edgepull pull` (exit 0, or 11 with
//! `signature missing|invalid|mismatch`) and by the independent verifier in the same
//! script, which reads the signature manifests skopeo fetches back. Both must agree with
//! the expected verdict; the case table is printed.

#[path = "real_registry/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use edgepull_core::oci::Digest;
use edgepull_core::signature::signature_tag;
use support::oci_image::*;
use support::proc::{command, run};
use support::tools::in_ci;
use support::world::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real_registry/cosign.py");

/// Whether python3 with `cryptography` is here (else skip, or fail in CI).
fn python_ready() -> bool {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", "import cryptography"]);
    let ok = cmd.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "python3-cryptography missing (scripts/real-registry-deps installs it)"
        );
        eprintln!("skipped: python3-cryptography missing");
    }
    ok
}

/// `python3 cosign.py <args>`; its stdout.
fn py(args: &[&str]) -> String {
    let mut cmd = command(Path::new("/usr/bin/python3"));
    cmd.arg(SCRIPT).args(args);
    run(cmd, Duration::from_secs(60))
        .expect_success(&format!("cosign.py {}", args.first().copied().unwrap_or("")))
        .stdout
        .trim()
        .to_string()
}

/// How a signature is spoiled after signing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    Payload,
    Annotation,
}

/// One signature: who signs, the reference and digest the payload names, what is spoiled.
struct Sig<'a> {
    key: &'a Key,
    reference: String,
    digest: Digest,
    tamper: Tamper,
}

struct Key {
    private: PathBuf,
    public: PathBuf,
}

struct Case<'a> {
    name: &'static str,
    keys: Vec<&'a Key>,
    /// Signatures stored under the `.sig` tag of (the index | the platform manifest).
    on_index: Vec<Sig<'a>>,
    on_platform: Vec<Sig<'a>>,
    identity: Option<String>,
    expect: &'static str,
}

#[test]
fn signature_cases_agree_with_an_independent_verifier() {
    if !python_ready() {
        return;
    }
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let reg = w.registry("login-sig", AuthKind::Token, Some("eastus"));
    let work = w.path().join("sig");
    std::fs::create_dir_all(&work).expect("work dir");
    let key = |name: &str| {
        let (private, public) = (work.join(format!("{name}.key")), work.join(format!("{name}.pub")));
        py(&[
            "keygen",
            &private.display().to_string(),
            &public.display().to_string(),
        ]);
        Key { private, public }
    };
    let (release, second, stranger) = (key("release"), key("second"), key("stranger"));
    let repo = format!("{}/{REPO}", w.login(&reg));
    let signed_as = "release.example.com/products/app".to_string();

    let mut layout = Layout::create(&w.path().join("src"));
    let mut index_of = |tag: &str| -> Index {
        let mut marker = Files::new();
        marker.insert("etc/case".into(), tag.as_bytes().to_vec());
        layout.index(
            tag,
            vec![
                (
                    LINUX_ARM64,
                    vec![random_files("opt/app", 1, 20_000), marker.clone()],
                ),
                (LINUX_AMD64, vec![random_files("opt/app", 1, 20_000), marker]),
            ],
        )
    };
    let names = [
        "signed-index",
        "signed-platform-only",
        "second-key-matches",
        "unsigned",
        "another-key",
        "payload-for-another-digest",
        "another-identity",
        "identity-override",
        "tampered-payload",
        "tampered-annotation",
    ];
    let images: Vec<Index> = names.iter().map(|n| index_of(n)).collect();
    for n in names {
        w.push(&layout.dir, n, true);
    }
    let sig = |key, reference: &str, digest: Digest, tamper| Sig {
        key,
        reference: reference.to_string(),
        digest,
        tamper,
    };
    let at = |i: usize| (images[i].digest, images[i].image(&LINUX_ARM64).manifest);
    let tagged = format!("{repo}:1.0");
    let cases = vec![
        Case {
            name: names[0],
            keys: vec![&release],
            on_index: vec![sig(&release, &repo, at(0).0, Tamper::None)],
            on_platform: vec![],
            identity: None,
            expect: "accepted",
        },
        Case {
            name: names[1],
            keys: vec![&release],
            on_index: vec![],
            on_platform: vec![sig(&release, &tagged, at(1).1, Tamper::None)],
            identity: None,
            expect: "accepted",
        },
        Case {
            name: names[2],
            keys: vec![&second, &release],
            on_index: vec![sig(&release, &repo, at(2).0, Tamper::None)],
            on_platform: vec![],
            identity: None,
            expect: "accepted",
        },
        Case {
            name: names[3],
            keys: vec![&release],
            on_index: vec![],
            on_platform: vec![],
            identity: None,
            expect: "missing",
        },
        Case {
            name: names[4],
            keys: vec![&release],
            on_index: vec![sig(&stranger, &repo, at(4).0, Tamper::None)],
            on_platform: vec![],
            identity: None,
            expect: "invalid",
        },
        Case {
            name: names[5],
            keys: vec![&release],
            on_index: vec![sig(&release, &repo, at(0).0, Tamper::None)],
            on_platform: vec![],
            identity: None,
            expect: "mismatch",
        },
        Case {
            name: names[6],
            keys: vec![&release],
            on_index: vec![sig(
                &release,
                &format!("{}/other", w.login(&reg)),
                at(6).0,
                Tamper::None,
            )],
            on_platform: vec![],
            identity: None,
            expect: "mismatch",
        },
        Case {
            name: names[7],
            keys: vec![&release],
            on_index: vec![sig(&release, &format!("{signed_as}:1.0"), at(7).0, Tamper::None)],
            on_platform: vec![],
            identity: Some(signed_as.clone()),
            expect: "accepted",
        },
        Case {
            name: names[8],
            keys: vec![&release],
            on_index: vec![sig(&release, &repo, at(8).0, Tamper::Payload)],
            on_platform: vec![],
            identity: None,
            expect: "invalid",
        },
        Case {
            name: names[9],
            keys: vec![&release],
            on_index: vec![sig(&release, &repo, at(9).0, Tamper::Annotation)],
            on_platform: vec![],
            identity: None,
            expect: "invalid",
        },
    ];

    let mut table = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (index, platform) = at(i);
        let dir = work.join(case.name);
        std::fs::create_dir_all(&dir).expect("case dir");
        let mut payloads = Vec::new();
        for (signed, sigs) in [(index, &case.on_index), (platform, &case.on_platform)] {
            if !sigs.is_empty() {
                payloads.extend(push_signatures(&w, &dir, &signed, sigs));
            }
        }
        let store = dir.join("store");
        let keys: Vec<String> = case.keys.iter().map(|k| k.public.display().to_string()).collect();
        let reference = w.reference(&reg, case.name);
        let cfg = w.config(&reg, AuthKind::Token, &store, |v| {
            v["signatures"] = serde_json::json!({ "public_keys": keys });
            if let Some(id) = &case.identity {
                v["images"] = serde_json::json!([{ "ref": reference, "identity": id }]);
            }
        });
        let out = w.pull(&cfg, &[&reference]);
        let edgepull = match out.code() {
            0 => "accepted".to_string(),
            11 => ["missing", "invalid", "mismatch"]
                .into_iter()
                .find(|k| out.stderr.contains(&format!("signature {k}")))
                .unwrap_or("11 without a class")
                .to_string(),
            code => format!("exit {code}: {}", out.stderr),
        };
        let recorded = std::fs::read_to_string(store.join("oci/index.json")).unwrap_or_default();
        assert_eq!(
            recorded.contains(&index.to_string()),
            edgepull == "accepted",
            "{}: index.json holds the image exactly when it was accepted: {recorded}",
            case.name
        );
        // Every payload edgepull judged came from the eastus data endpoint, without
        // credentials (the login server answered its GET with a redirect).
        let east = w.nginx.log("eastus");
        for p in &payloads {
            let lines: Vec<_> = east
                .iter()
                .filter(|l| l.blob_hex() == Some(p.hex().as_str()))
                .collect();
            assert!(
                lines.iter().any(|l| l.status == 200) && lines.iter().all(|l| !l.auth),
                "{}: payload {p} from eastus without Authorization: {lines:?}",
                case.name
            );
        }
        let independent = independent_verdict(
            &w,
            &dir,
            &case.keys,
            case.identity.as_deref().unwrap_or(&repo),
            &[index, platform],
        );
        table.push((case.name, case.expect, edgepull, independent));
    }
    println!("\n| case | expected | edgepull | independent verifier (python3-cryptography) |");
    println!("| --- | --- | --- | --- |");
    for (name, expect, e, p) in &table {
        println!("| {name} | {expect} | {e} | {p} |");
    }
    for (name, expect, e, p) in &table {
        assert_eq!((e.as_str(), p.as_str()), (*expect, *expect), "{name}");
    }
}

/// Sign each of `sigs` with the Python signer, build the signature manifest's OCI layout
/// and push it with skopeo as `sha256-<hex>.sig` of `signed`.
/// Returns the digests of the payloads as pushed.
fn push_signatures(w: &World, dir: &Path, signed: &Digest, sigs: &[Sig<'_>]) -> Vec<Digest> {
    let mut payloads = Vec::new();
    let tag = signature_tag(signed);
    let mut args: Vec<String> = vec!["layout".into()];
    let layout = dir.join(format!("layout-{}", signed.hex()));
    args.push(layout.display().to_string());
    args.push(tag.clone());
    for (n, s) in sigs.iter().enumerate() {
        let out = dir.join(format!("sig-{}-{n}", signed.hex()));
        py(&[
            "sign",
            &s.key.private.display().to_string(),
            &s.reference,
            &s.digest.to_string(),
            &out.display().to_string(),
        ]);
        let (payload, signature) = (out.join("payload"), out.join("signature"));
        match s.tamper {
            Tamper::None => {}
            Tamper::Payload => {
                let text = std::fs::read_to_string(&payload).expect("payload");
                let spoiled = text.replace("\"optional\":null", "\"optional\":{}");
                assert_ne!(text, spoiled);
                std::fs::write(&payload, spoiled).expect("write payload");
            }
            Tamper::Annotation => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut raw = b64
                    .decode(std::fs::read_to_string(&signature).expect("sig").trim())
                    .expect("b64");
                let last = raw.len() - 1;
                raw[last] ^= 0x01;
                std::fs::write(&signature, b64.encode(raw)).expect("write sig");
            }
        }
        payloads.push(Digest::of(&std::fs::read(&payload).expect("payload")));
        args.push(payload.display().to_string());
        args.push(signature.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    py(&refs);
    w.push(&layout, &tag, false);
    payloads
}

/// The independent verdict: skopeo fetches each candidate's `.sig` manifest and payloads
/// back from the registry into an OCI layout; cosign.py verifies them.
fn independent_verdict(
    w: &World,
    dir: &Path,
    keys: &[&Key],
    identity: &str,
    candidates: &[Digest],
) -> String {
    let creds = format!("{}:{}", w.pusher.name, w.pusher.password);
    let cert_dir = w.pki.cert_dir.display().to_string();
    let mut args: Vec<String> = vec![
        "verify".into(),
        identity.into(),
        keys.iter()
            .map(|k| k.public.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    ];
    for d in candidates {
        let tag = signature_tag(d);
        let fetched = dir.join(format!("fetched-{}", d.hex()));
        let src = format!("docker://127.0.0.1:{}/{REPO}:{tag}", w.direct.port);
        let dst = format!("oci:{}:{tag}", fetched.display());
        let out = w.skopeo(&[
            "copy",
            "--preserve-digests",
            "--src-cert-dir",
            &cert_dir,
            "--src-creds",
            &creds,
            &src,
            &dst,
        ]);
        if out.status.success() {
            args.push(format!("{d}={}", fetched.display()));
        } else {
            assert!(
                out.stderr.contains("manifest unknown"),
                "skopeo could not fetch {tag}: {}",
                out.stderr
            );
            args.push(format!("{d}="));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    py(&refs)
}
