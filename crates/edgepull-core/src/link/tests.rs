use super::*;

const MIB: u64 = 1 << 20;

#[test]
fn sizes_parse_with_units_and_refuse_garbage() {
    let ok = [
        ("1048576", 1_048_576),
        ("2MiB", 2 * MIB),
        ("2 MiB", 2 * MIB),
        ("2mib/s", 2 * MIB),
        ("500K", 500_000),
        ("500kb", 500_000),
        ("3M", 3_000_000),
        ("1G", 1_000_000_000),
        ("1GiB", 1 << 30),
        ("64KiB", 64 << 10),
        ("7B", 7),
    ];
    for (text, want) in ok {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    let bad = [
        ("", SizeError::Empty),
        ("MiB", SizeError::Syntax { value: "MiB".into() }),
        ("2.5M", SizeError::Syntax { value: "2.5M".into() }),
        ("-1", SizeError::Syntax { value: "-1".into() }),
        ("2TiB", SizeError::Syntax { value: "2TiB".into() }),
        ("0", SizeError::Zero { value: "0".into() }),
        ("0MiB", SizeError::Zero { value: "0MiB".into() }),
        (
            "99999999999GiB",
            SizeError::Overflow {
                value: "99999999999GiB".into(),
            },
        ),
        (
            "999999999999999999999",
            SizeError::Overflow {
                value: "999999999999999999999".into(),
            },
        ),
    ];
    for (text, want) in bad {
        assert_eq!(parse_size(text), Err(want), "{text}");
    }
}

/// Several consumers each taking `chunk` bytes at a time from one bucket, in simulated
/// time: each uses its bytes when its wait is over, then reserves the next chunk. Returns
/// (time each chunk was used, its size).
fn simulate(bucket: &mut TokenBucket, consumers: usize, chunk: u64, total: u64) -> Vec<(Duration, u64)> {
    let mut ready = vec![Duration::ZERO; consumers];
    let mut used = Vec::new();
    let mut left = total;
    while left > 0 {
        // The consumer that is ready first reserves next.
        let (i, now) = ready.iter().copied().enumerate().min_by_key(|(_, t)| *t).unwrap();
        let n = chunk.min(left);
        left -= n;
        let wait = bucket.reserve(n, now);
        used.push((now + wait, n));
        ready[i] = now + wait;
    }
    used
}

/// Largest number of bytes used within any `slice` window starting at a use.
fn max_in_slice(used: &[(Duration, u64)], slice: Duration) -> u64 {
    let mut sorted = used.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut j = 0;
    let mut sum = 0;
    for i in 0..sorted.len() {
        while j < sorted.len() && sorted[j].0 < sorted[i].0 + slice {
            sum += sorted[j].1;
            j += 1;
        }
        best = best.max(sum);
        sum -= sorted[i].1;
    }
    best
}

#[test]
fn bucket_rates_and_several_consumers_never_beat_the_cap() {
    // (rate, consumers, chunk, total)
    let table = [
        (4 * MIB, 1, 16 << 10, 64 * MIB),
        (4 * MIB, 3, 16 << 10, 64 * MIB),
        (2 * MIB, 8, 64 << 10, 20 * MIB),
        (100_000, 2, 1500, 1_000_000),
        (4 * MIB, 4, 1, 4096),
    ];
    for (rate, consumers, chunk, total) in table {
        let mut b = TokenBucket::new(rate, Duration::ZERO);
        let used = simulate(&mut b, consumers, chunk, total);
        let end = used.iter().map(|u| u.0).max().unwrap();
        let ideal = total as f64 / rate as f64;
        // Starts empty: never faster than total/rate; reservation keeps it just as fast.
        assert!(
            end.as_secs_f64() >= ideal - 1e-9,
            "{rate} {consumers}: {end:?} < {ideal}"
        );
        assert!(
            end.as_secs_f64() <= ideal * 1.001 + 1e-6,
            "{rate} {consumers}: {end:?} ≫ {ideal}"
        );
        let per_second = max_in_slice(&used, Duration::from_secs(1));
        assert!(
            per_second <= rate + chunk * consumers as u64,
            "{rate} {consumers}: {per_second} bytes in one second"
        );
        if total >= 10 * rate {
            let per_10 = max_in_slice(&used, Duration::from_secs(10));
            assert!(per_10 as f64 <= rate as f64 * 10.0 * 1.05, "{per_10} in 10 s");
        }
    }
}

#[test]
fn bucket_burst_after_idle_is_at_most_one_second() {
    let rate = MIB;
    let mut b = TokenBucket::new(rate, Duration::ZERO);
    // Idle for a minute: the bucket fills to one second's worth, no more.
    let t = Duration::from_secs(60);
    assert_eq!(b.reserve(rate, t), Duration::ZERO);
    // The next second's worth has to wait a full second.
    assert_eq!(b.reserve(rate, t), Duration::from_secs(1));
    // A new bucket starts empty.
    let mut fresh = TokenBucket::new(rate, t);
    assert_eq!(fresh.reserve(rate / 2, t), Duration::from_millis(500));
}

#[test]
fn bucket_rate_change_keeps_debt_and_caps_surplus() {
    let mut b = TokenBucket::new(1000, Duration::ZERO);
    assert_eq!(b.reserve(2000, Duration::ZERO), Duration::from_secs(2));
    b.set_rate(2000, Duration::ZERO);
    // 2000 owed at 2000/s.
    assert_eq!(b.reserve(0, Duration::ZERO), Duration::from_secs(1));
    // Full at the old high rate, then lowered: at most one second of the new rate.
    let mut c = TokenBucket::new(10_000, Duration::ZERO);
    c.set_rate(100, Duration::from_secs(5));
    assert_eq!(c.reserve(100, Duration::from_secs(5)), Duration::ZERO);
    assert_eq!(c.reserve(100, Duration::from_secs(5)), Duration::from_secs(1));
}

#[test]
fn windows_parse_and_refuse() {
    for (text, shown) in [
        ("22:00-06:00", "22:00-06:00"),
        (" 01:30 - 04:15 ", "01:30-04:15"),
        ("00:00-24:00", "00:00-24:00"),
    ] {
        assert_eq!(Window::parse(text).unwrap().to_string(), shown);
    }
    for text in ["22-06", "2200-0600", "22:00", "ab:00-01:00", "1:00-2:00"] {
        assert!(
            matches!(Window::parse(text), Err(WindowError::Syntax { .. })),
            "{text}"
        );
    }
    for text in ["24:00-01:00", "23:60-01:00", "25:00-01:00", "01:00-24:01"] {
        assert!(
            matches!(Window::parse(text), Err(WindowError::Time { .. })),
            "{text}"
        );
    }
    assert!(matches!(
        Window::parse("03:00-03:00"),
        Err(WindowError::Empty { .. })
    ));
}

/// 2024-03-30T00:00:00Z.
const MAR30: i64 = 1_711_756_800;
const H: i64 = 3600;

fn sched(windows: &[&str], zone: TimeZone) -> Schedule {
    Schedule {
        windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
        zone,
    }
}

fn utc(_: i64) -> i32 {
    0
}

#[test]
fn window_state_utc_boundaries_and_overnight() {
    let night = sched(&["22:00-06:00"], TimeZone::Utc);
    let day = MAR30;
    let table = [
        // (now, expected)
        (
            day + 22 * H - 1,
            WindowState::Closed {
                opens_at: day + 22 * H,
            },
        ),
        (
            day + 22 * H,
            WindowState::Open {
                closes_at: Some(day + 30 * H),
            },
        ),
        (
            day + 5 * H + 59 * 60 + 59,
            WindowState::Open {
                closes_at: Some(day + 6 * H),
            },
        ),
        (
            day + 6 * H,
            WindowState::Closed {
                opens_at: day + 22 * H,
            },
        ),
        (
            day + 12 * H,
            WindowState::Closed {
                opens_at: day + 22 * H,
            },
        ),
        (
            day + 23 * H + 30 * 60,
            WindowState::Open {
                closes_at: Some(day + 30 * H),
            },
        ),
    ];
    for (now, want) in table {
        assert_eq!(night.state(now, &utc), want, "at {}", now - day);
    }
    // Two windows: closes at the end of the one it is in, opens at the nearer one.
    let two = sched(&["01:00-02:00", "04:00-05:00"], TimeZone::Utc);
    assert_eq!(
        two.state(day + 2 * H, &utc),
        WindowState::Closed {
            opens_at: day + 4 * H
        }
    );
    assert_eq!(
        two.state(day + H, &utc),
        WindowState::Open {
            closes_at: Some(day + 2 * H)
        }
    );
    // Adjacent windows join.
    let joined = sched(&["01:00-02:00", "02:00-03:00"], TimeZone::Utc);
    assert_eq!(
        joined.state(day + H, &utc),
        WindowState::Open {
            closes_at: Some(day + 3 * H)
        }
    );
    // None: always open; all day: never closes.
    assert_eq!(
        Schedule::default().state(day, &utc),
        WindowState::Open { closes_at: None }
    );
    let all = sched(&["00:00-24:00"], TimeZone::Utc);
    assert_eq!(all.state(day, &utc), WindowState::Open { closes_at: None });
}

/// Europe/Berlin around 2024: CET (+1 h), CEST (+2 h) from 2024-03-31T01:00Z to
/// 2024-10-27T01:00Z.
fn berlin(t: i64) -> i32 {
    const SPRING: i64 = 1_711_846_800;
    const AUTUMN: i64 = 1_729_990_800;
    if (SPRING..AUTUMN).contains(&t) { 7200 } else { 3600 }
}

#[test]
fn window_state_local_follows_dst() {
    let w = sched(&["02:00-03:00"], TimeZone::Local);
    let mar31 = MAR30 + 24 * H;
    // The day before: 02:00 CET is 01:00Z.
    assert_eq!(
        w.state(MAR30, &berlin),
        WindowState::Closed { opens_at: MAR30 + H }
    );
    // Spring forward: 02:00-03:00 does not exist on March 31; the next is April 1 at
    // 02:00 CEST = 00:00Z.
    assert_eq!(
        w.state(mar31, &berlin),
        WindowState::Closed {
            opens_at: mar31 + 24 * H
        }
    );
    // In UTC the same window is simply 02:00Z.
    let u = sched(&["02:00-03:00"], TimeZone::Utc);
    assert_eq!(
        u.state(mar31, &berlin),
        WindowState::Closed {
            opens_at: mar31 + 2 * H
        }
    );
    // Fall back: on October 27, 02:00-03:00 local happens twice (00:00Z-01:00Z CEST and
    // 01:00Z-02:00Z CET): one open period of two hours.
    let oct27 = 1_729_987_200; // 2024-10-27T00:00:00Z
    assert_eq!(
        w.state(oct27 - 1, &berlin),
        WindowState::Closed { opens_at: oct27 }
    );
    assert_eq!(
        w.state(oct27, &berlin),
        WindowState::Open {
            closes_at: Some(oct27 + 2 * H)
        }
    );
    // A night window across spring-forward is an hour shorter.
    let n = sched(&["22:00-06:00"], TimeZone::Local);
    let open = MAR30 + 21 * H; // 22:00 CET
    assert_eq!(
        n.state(open, &berlin),
        WindowState::Open {
            closes_at: Some(mar31 + 4 * H)
        }
    );
}

#[test]
fn quota_rolls_over_at_utc_midnight_only_forward() {
    let mut q = QuotaDay::default();
    let t = MAR30 + 23 * H;
    q.add(700, t);
    assert_eq!(
        q,
        QuotaDay {
            day: QuotaDay::day_of(MAR30),
            bytes: 700
        }
    );
    assert_eq!(q.remaining(1000, t), 300);
    q.add(500, t + 3599);
    assert_eq!(q.remaining(1000, t + 3599), 0);
    // Midnight UTC: a new day.
    assert_eq!(q.remaining(1000, MAR30 + 24 * H), 1000);
    q.add(10, MAR30 + 24 * H);
    assert_eq!(q.bytes, 10);
    // A clock set back does not reset the count.
    q.add(5, MAR30);
    assert_eq!(q.bytes, 15);
    assert_eq!(QuotaDay::next_day(MAR30 + 5), MAR30 + 24 * H);
    assert_eq!(QuotaDay::next_day(MAR30 - 1), MAR30);
}

#[test]
fn gate_combines_windows_and_quota() {
    let none = Schedule::default();
    let night = sched(&["22:00-06:00"], TimeZone::Utc);
    let used = QuotaDay {
        day: QuotaDay::day_of(MAR30),
        bytes: 1000,
    };
    let part = QuotaDay {
        day: QuotaDay::day_of(MAR30),
        bytes: 10,
    };
    let noon = MAR30 + 12 * H;
    let table = [
        (&none, None, noon, Gate::Open { until: None }),
        (&none, Some((1000, &part)), noon, Gate::Open { until: None }),
        (
            &none,
            Some((1000, &used)),
            noon,
            Gate::Closed {
                by: ClosedBy::Quota,
                opens_at: MAR30 + 24 * H,
            },
        ),
        // Used up: reopens at the first window after midnight (midnight itself is in it).
        (
            &night,
            Some((1000, &used)),
            MAR30 + 23 * H,
            Gate::Closed {
                by: ClosedBy::Quota,
                opens_at: MAR30 + 24 * H,
            },
        ),
        (
            &night,
            Some((1000, &part)),
            noon,
            Gate::Closed {
                by: ClosedBy::Window,
                opens_at: MAR30 + 22 * H,
            },
        ),
        (
            &night,
            None,
            MAR30 + 23 * H,
            Gate::Open {
                until: Some(MAR30 + 30 * H),
            },
        ),
    ];
    for (s, q, now, want) in table {
        assert_eq!(gate(s, q, now, &utc), want);
    }
    // Used up, windows only in the afternoon: the next day's window.
    let pm = sched(&["14:00-15:00"], TimeZone::Utc);
    assert_eq!(
        gate(&pm, Some((1000, &used)), MAR30 + 14 * H, &utc),
        Gate::Closed {
            by: ClosedBy::Quota,
            opens_at: MAR30 + 38 * H
        }
    );
}

#[test]
fn eta_uses_the_lower_of_cap_and_measured() {
    assert_eq!(eta(64 * MIB, Some(4 * MIB), None), Some(Duration::from_secs(16)));
    assert_eq!(
        eta(64 * MIB, Some(4 * MIB), Some(2 * MIB)),
        Some(Duration::from_secs(32))
    );
    assert_eq!(
        eta(64 * MIB, Some(4 * MIB), Some(8 * MIB)),
        Some(Duration::from_secs(16))
    );
    assert_eq!(eta(10, None, Some(3)), Some(Duration::from_secs(4)));
    assert_eq!(eta(10, None, None), None);
    assert_eq!(eta(10, None, Some(0)), None);
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(MAR30 + 22 * H + 61), "2024-03-30T22:01:01Z");
    assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
}
