//! Property tests of the core's parsers: for generated valid values, parsing what `Display`
//! prints gives the value back (parse ∘ display = id); for arbitrary text, parsing never
//! panics (it returns a value or an error).

use edgepull_core::hostport::HostPort;
use edgepull_core::oci::{Digest, Platform, Reference};
use edgepull_core::resume::{ContentRange, parse_content_range, resume_check};
use proptest::prelude::*;

/// A DNS label: lowercase letters and digits, inner hyphens.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

/// A host name with at least one dot (what a registry reference needs), an IPv4 or an
/// IPv6 literal.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(label(), 2..4).prop_map(|l| l.join(".")),
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| std::net::Ipv6Addr::from(s).to_string()),
    ]
}

fn host_port() -> impl Strategy<Value = HostPort> {
    (host(), 1..=u16::MAX).prop_map(|(h, p)| HostPort::new(&h, p).expect("generated host is plain"))
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(|b| Digest::parse(&format!("sha256:{}", hex::encode(b))).expect("valid"))
}

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component() -> impl Strategy<Value = String> {
    (
        "[a-z0-9]{1,6}",
        prop::collection::vec(
            (
                prop_oneof![
                    Just(".".to_string()),
                    Just("_".to_string()),
                    Just("__".to_string()),
                    "-{1,3}"
                ],
                "[a-z0-9]{1,6}",
            ),
            0..3,
        ),
    )
        .prop_map(|(first, rest)| {
            rest.into_iter()
                .fold(first, |acc, (sep, part)| format!("{acc}{sep}{part}"))
        })
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,30}"
}

/// A reference text in canonical form: registry, repository, a tag and/or a digest.
fn reference_text() -> impl Strategy<Value = String> {
    (
        host_port(),
        prop::collection::vec(component(), 1..4),
        prop::option::of(tag()),
        prop::option::of(digest()),
    )
        .prop_filter("a tag or a digest (a bare name gains :latest)", |(_, _, t, d)| {
            t.is_some() || d.is_some()
        })
        .prop_map(|(registry, repo, tag, digest)| {
            let mut s = format!("{registry}/{}", repo.join("/"));
            if let Some(t) = tag {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(d) = digest {
                s.push('@');
                s.push_str(&d.to_string());
            }
            s
        })
        .prop_filter("at most 255 characters", |s| s.len() <= 255)
}

/// A platform as `Platform::normalized` builds it from index parts.
fn platform() -> impl Strategy<Value = Platform> {
    let arch = prop_oneof![
        Just("arm64".to_string()),
        Just("aarch64".to_string()),
        Just("arm".to_string()),
        Just("armhf".to_string()),
        Just("armel".to_string()),
        Just("amd64".to_string()),
        Just("x86_64".to_string()),
        "[a-z0-9_.]{1,8}",
    ];
    let variant = prop_oneof![Just(String::new()), "v?[0-9]{1,2}", "[a-z0-9_.]{1,6}"];
    ("[a-zA-Z0-9_.]{1,8}", arch, variant)
        .prop_map(|(os, arch, variant)| Platform::normalized(&os, &arch, &variant))
}

fn content_range() -> impl Strategy<Value = ContentRange> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(a, b, known)| {
            let (first, last) = (a.min(b), a.max(b));
            ContentRange::Bytes {
                first,
                last,
                complete: (known && last < u64::MAX).then_some(last + 1 + (a ^ b) % (u64::MAX - last)),
            }
        }),
        any::<u64>().prop_map(|complete| ContentRange::Unsatisfied { complete }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn digest_display_parses_back(d in digest()) {
        prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        prop_assert_eq!(d.to_string(), format!("sha256:{}", d.hex()));
    }

    #[test]
    fn digest_of_data_round_trips(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let d = Digest::of(&data);
        prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn host_port_display_parses_back(hp in host_port()) {
        prop_assert_eq!(HostPort::parse(&hp.to_string()).unwrap(), hp.clone());
        prop_assert_eq!(HostPort::parse(&hp.with_port()).unwrap(), hp.clone());
        prop_assert_eq!(HostPort::parse(&hp.authority()).unwrap(), hp);
    }

    #[test]
    fn reference_text_parses_and_prints_unchanged(text in reference_text()) {
        let r = Reference::parse(&text).unwrap();
        prop_assert_eq!(r.to_string(), text);
        prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn platform_display_parses_back(p in platform()) {
        prop_assert_eq!(Platform::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn content_range_display_parses_back(cr in content_range()) {
        prop_assert_eq!(parse_content_range(&cr.to_string()).unwrap(), cr);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in "\\PC{0,80}") {
        let _ = Digest::parse(&s);
        let _ = Reference::parse(&s);
        let _ = Platform::parse(&s);
        let _ = HostPort::parse(&s);
        let _ = parse_content_range(&s);
    }

    #[test]
    fn parsers_never_panic_on_near_misses(
        prefix in prop_oneof![
            Just("sha256:"), Just("bytes "), Just("bytes */"), Just("linux/"),
            Just("contoso.azurecr.io/"), Just("["), Just("a.b:"),
        ],
        tail in "[ -~]{0,70}",
    ) {
        let s = format!("{prefix}{tail}");
        let _ = Digest::parse(&s);
        let _ = Reference::parse(&s);
        let _ = Platform::parse(&s);
        let _ = HostPort::parse(&s);
        let _ = parse_content_range(&s);
    }

    #[test]
    fn resume_check_never_panics(
        offset in any::<u64>(),
        size in any::<u64>(),
        status in any::<u16>(),
        range in prop::option::of("[ -~]{0,40}"),
        length in prop::option::of(any::<u64>()),
    ) {
        let _ = resume_check(offset, size, status, range.as_deref(), length);
    }
}
