//! Table tests for `Content-Range` parsing and the resume decision.

use super::*;

#[test]
fn parse_table() {
    use ContentRange::*;
    let ok = [
        (
            "bytes 0-499/1234",
            Bytes {
                first: 0,
                last: 499,
                complete: Some(1234),
            },
        ),
        (
            "bytes 500-999/*",
            Bytes {
                first: 500,
                last: 999,
                complete: None,
            },
        ),
        ("bytes */1234", Unsatisfied { complete: 1234 }),
        (
            "BYTES 0-0/1",
            Bytes {
                first: 0,
                last: 0,
                complete: Some(1),
            },
        ),
        (
            "  bytes  7-7/8 ",
            Bytes {
                first: 7,
                last: 7,
                complete: Some(8),
            },
        ),
        (
            "bytes 0-18446744073709551614/18446744073709551615",
            Bytes {
                first: 0,
                last: u64::MAX - 1,
                complete: Some(u64::MAX),
            },
        ),
    ];
    for (input, want) in ok {
        let got = parse_content_range(input);
        assert_eq!(got, Ok(want), "{input:?}");
        assert_eq!(
            parse_content_range(&want.to_string()),
            Ok(want),
            "round trip {input:?}"
        );
    }
    type Check = fn(&RangeError) -> bool;
    let bad: &[(&str, Check)] = &[
        ("bytes 5-4/10", |e| {
            matches!(e, RangeError::LastBeforeFirst { first: 5, last: 4 })
        }),
        ("bytes 0-10/10", |e| {
            matches!(
                e,
                RangeError::LastBeyondComplete {
                    last: 10,
                    complete: 10
                }
            )
        }),
        (
            "items 0-1/2",
            |e| matches!(e, RangeError::UnknownUnit { unit } if unit == "items"),
        ),
        ("bytes */*", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes 0-1", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes=0-1/2", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes -1-2/3", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes 1-/3", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes +1-2/3", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes 0-1/2x", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes 0 - 1/2", |e| matches!(e, RangeError::Malformed { .. })),
        ("bytes 18446744073709551616-1/2", |e| {
            matches!(e, RangeError::Malformed { .. })
        }),
        ("bytes", |e| matches!(e, RangeError::Malformed { .. })),
        ("", |e| matches!(e, RangeError::Malformed { .. })),
    ];
    for (input, check) in bad {
        let err = parse_content_range(input).unwrap_err();
        assert!(check(&err), "{input:?} gave {err:?}");
    }
}

enum Want {
    Continue,
    Ignored,
    Complete,
    Restart(fn(&RangeError) -> bool),
    Invalid(fn(&RangeError) -> bool),
}

#[test]
fn resume_table() {
    /// offset, size, status, Content-Range, Content-Length, expectation.
    type Case = (u64, u64, u16, Option<&'static str>, Option<u64>, Want);
    let good = Some("bytes 400-999/1000");
    let cases: &[Case] = &[
        // Fresh downloads.
        (0, 1000, 200, None, Some(1000), Want::Continue),
        (0, 1000, 200, None, None, Want::Continue),
        (0, 1000, 206, Some("bytes 0-999/1000"), Some(1000), Want::Continue),
        // Longer than the blob: read as far as the blob goes, ignore the rest.
        (0, 1000, 200, None, Some(1001), Want::Continue),
        (0, 1000, 200, None, Some(u64::MAX), Want::Continue),
        (
            0,
            1000,
            200,
            None,
            Some(999),
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::ContentLengthMismatch {
                        expected: 1000,
                        got: 999
                    }
                )
            }),
        ),
        // A good resume.
        (400, 1000, 206, good, Some(600), Want::Continue),
        (400, 1000, 206, good, None, Want::Continue),
        (
            999,
            1000,
            206,
            Some("bytes 999-999/1000"),
            Some(1),
            Want::Continue,
        ),
        // Bad 206s.
        (
            400,
            1000,
            206,
            None,
            Some(600),
            Want::Invalid(|e| matches!(e, RangeError::MissingContentRange)),
        ),
        (
            400,
            1000,
            206,
            Some("bytes 0-999/1000"),
            None,
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::WrongStart {
                        expected: 400,
                        got: 0
                    }
                )
            }),
        ),
        (
            400,
            1000,
            206,
            Some("bytes 401-999/1000"),
            None,
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::WrongStart {
                        expected: 400,
                        got: 401
                    }
                )
            }),
        ),
        (
            400,
            1000,
            206,
            Some("bytes 400-899/1000"),
            None,
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::WrongEnd {
                        expected: 999,
                        got: 899
                    }
                )
            }),
        ),
        (
            400,
            1000,
            206,
            Some("bytes 400-999/*"),
            None,
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::WrongTotal {
                        expected: 1000,
                        got: None
                    }
                )
            }),
        ),
        (
            400,
            1000,
            206,
            Some("bytes 400-1999/2000"),
            None,
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::WrongTotal {
                        expected: 1000,
                        got: Some(2000)
                    }
                )
            }),
        ),
        (
            400,
            1000,
            206,
            Some("bytes */1000"),
            None,
            Want::Invalid(|e| matches!(e, RangeError::NotARange { .. })),
        ),
        (
            400,
            1000,
            206,
            Some("garbage"),
            None,
            Want::Invalid(|e| matches!(e, RangeError::Malformed { .. })),
        ),
        (400, 1000, 206, good, Some(601), Want::Continue),
        (400, 1000, 206, good, Some(u64::MAX), Want::Continue),
        (400, 1000, 200, None, Some(1001), Want::Ignored),
        (
            400,
            1000,
            206,
            good,
            Some(599),
            Want::Invalid(|e| matches!(e, RangeError::ContentLengthMismatch { .. })),
        ),
        (
            0,
            0,
            206,
            Some("bytes 0-0/1"),
            None,
            Want::Invalid(|e| matches!(e, RangeError::WrongTotal { expected: 0, .. })),
        ),
        // Range ignored.
        (400, 1000, 200, None, Some(1000), Want::Ignored),
        (400, 1000, 200, None, None, Want::Ignored),
        (400, 1000, 200, Some("bytes 400-999/1000"), None, Want::Ignored),
        (
            400,
            1000,
            200,
            None,
            Some(600),
            Want::Invalid(|e| {
                matches!(
                    e,
                    RangeError::ContentLengthMismatch {
                        expected: 1000,
                        got: 600
                    }
                )
            }),
        ),
        // 416.
        (1000, 1000, 416, Some("bytes */1000"), None, Want::Complete),
        (1000, 1000, 416, None, None, Want::Complete),
        (
            400,
            1000,
            416,
            Some("bytes */300"),
            None,
            Want::Restart(|e| {
                matches!(
                    e,
                    RangeError::NotSatisfiable {
                        offset: 400,
                        size: 1000,
                        complete: Some(300)
                    }
                )
            }),
        ),
        (
            400,
            1000,
            416,
            Some("junk"),
            None,
            Want::Restart(|e| matches!(e, RangeError::NotSatisfiable { complete: None, .. })),
        ),
        // Partial file longer than the blob, whatever the server says.
        (
            1200,
            1000,
            206,
            Some("bytes 1200-1299/1300"),
            None,
            Want::Restart(|e| {
                matches!(
                    e,
                    RangeError::OffsetBeyondSize {
                        offset: 1200,
                        size: 1000
                    }
                )
            }),
        ),
        (
            1200,
            1000,
            416,
            Some("bytes */1000"),
            None,
            Want::Restart(|e| matches!(e, RangeError::OffsetBeyondSize { .. })),
        ),
        (
            1200,
            1000,
            200,
            None,
            None,
            Want::Restart(|e| matches!(e, RangeError::OffsetBeyondSize { .. })),
        ),
        // Not a body.
        (
            400,
            1000,
            404,
            None,
            None,
            Want::Invalid(|e| matches!(e, RangeError::UnexpectedStatus { status: 404 })),
        ),
        (
            400,
            1000,
            307,
            None,
            None,
            Want::Invalid(|e| matches!(e, RangeError::UnexpectedStatus { status: 307 })),
        ),
    ];
    for (offset, size, status, cr, cl, want) in cases {
        let got = resume_check(*offset, *size, *status, *cr, *cl);
        let ok = match (want, &got) {
            (Want::Continue, ResumeOutcome::Continue)
            | (Want::Ignored, ResumeOutcome::ServerIgnoredRange)
            | (Want::Complete, ResumeOutcome::AlreadyComplete) => true,
            (Want::Restart(check), ResumeOutcome::Restart(e))
            | (Want::Invalid(check), ResumeOutcome::Invalid(e)) => check(e),
            _ => false,
        };
        assert!(ok, "offset {offset} size {size} {status} {cr:?} {cl:?}: {got:?}");
    }
}

#[test]
fn announced_excess_table() {
    let cases = [
        (1000, None, 0),
        (1000, Some(1000), 0),
        (1000, Some(999), 0),
        (1000, Some(1001), 1),
        (600, Some(5600), 5000),
        (0, Some(u64::MAX), u64::MAX),
    ];
    for (expected, len, want) in cases {
        assert_eq!(announced_excess(expected, len), want, "{expected} {len:?}");
    }
}

#[test]
fn messages_name_the_numbers() {
    let ResumeOutcome::Invalid(e) = resume_check(400, 1000, 206, Some("bytes 0-999/1000"), None) else {
        panic!()
    };
    assert_eq!(
        e.to_string(),
        "206 starts at byte 0, but byte 400 was requested; refusing to append it"
    );
    let long = "x".repeat(10_000);
    let e = parse_content_range(&format!("bytes {long}")).unwrap_err();
    assert!(e.to_string().len() < 300, "{e}");
}
