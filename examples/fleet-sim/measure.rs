//! What the simulation counts: request kinds, per-minute rates, and the adoption record of
//! a rollout checked against the core's slot formula.
//!
//! Owns: the classification of the fake registry's request records (which ones are ACR
//! ReadOps), the per-minute series, the adoption tracker and the report types written to
//! JSON. Never drives time or the fleet (`scenario` and `fleet` do).

use std::collections::BTreeMap;

use edgepull::daemon::status::ImageStatus;
use edgepull_core::oci::Digest;
use edgepull_core::rollout::slot;
use edgepull_testkit::{RequestRecord, ServerName};
use serde::Serialize;

use crate::fleet::{Fleet, Step};

/// What a request was, as an operator counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `HEAD /v2/<name>/manifests/<tag>` on the login server: the poll.
    Head,
    /// `GET /v2/<name>/manifests/<digest>` on the login server.
    ManifestGet,
    /// `GET /v2/<name>/blobs/<digest>` on the login server (answered with a 307 to the
    /// data endpoint: ACR's "getting layer blob location").
    BlobGet,
    /// The blob body from the region's data endpoint (the signed link).
    DataGet,
    /// `/oauth2/token` (login server or the separate realm).
    Token,
    /// Anything else (`/v2/` pings and the like).
    Other,
}

impl Kind {
    pub(crate) fn of(r: &RequestRecord) -> Kind {
        match r.server {
            ServerName::EastUs | ServerName::WestUs => return Kind::DataGet,
            ServerName::Auth => return Kind::Token,
            ServerName::Login => {}
        }
        if r.path == "/oauth2/token" {
            return Kind::Token;
        }
        let manifests = r.path.starts_with("/v2/") && r.path.contains("/manifests/");
        let blobs = r.path.starts_with("/v2/") && r.path.contains("/blobs/");
        match r.method.as_str() {
            "HEAD" if manifests => Kind::Head,
            "GET" if manifests => Kind::ManifestGet,
            "GET" if blobs => Kind::BlobGet,
            _ => Kind::Other,
        }
    }

    /// An ACR ReadOp: a registry API read on the login server (manifest HEAD/GET, the
    /// blob GET that returns the blob's location). Token requests (OAuth) and the data
    /// endpoint's body transfer are counted apart.
    pub(crate) fn is_readop(self) -> bool {
        matches!(self, Kind::Head | Kind::ManifestGet | Kind::BlobGet)
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Head => "HEAD manifest (login)",
            Kind::ManifestGet => "GET manifest (login)",
            Kind::BlobGet => "GET blob -> 307 (login)",
            Kind::DataGet => "GET blob body (data endpoint)",
            Kind::Token => "token (/oauth2/token)",
            Kind::Other => "other",
        }
    }
}

/// Requests by `<kind> <status>`, e.g. `HEAD manifest (login) 200`.
pub(crate) fn by_kind(requests: &[RequestRecord]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(format!("{} {}", Kind::of(r).label(), r.status))
            .or_default() += 1;
    }
    out
}

/// Add `more` into `into`.
pub(crate) fn merge(into: &mut BTreeMap<String, u64>, more: BTreeMap<String, u64>) {
    for (k, v) in more {
        *into.entry(k).or_default() += v;
    }
}

/// Requests of one simulated minute.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Minute {
    /// Minutes since the phase began.
    pub minute: u64,
    /// ACR ReadOps ([`Kind::is_readop`]), any status.
    pub readops: u64,
    pub head: u64,
    pub manifest_get: u64,
    pub blob_get: u64,
    pub data_get: u64,
    pub token: u64,
    /// ReadOps answered with a status of 400 or more (401 challenges included).
    pub failed: u64,
}

/// Per-minute counts of a phase that began at `t0` (simulated seconds since fleet start).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Series {
    #[serde(skip)]
    t0: u64,
    pub minutes: Vec<Minute>,
}

impl Series {
    pub(crate) fn new(t0: u64) -> Self {
        Self {
            t0,
            minutes: Vec::new(),
        }
    }

    /// Count `step`'s requests in the minute of its time. A step at `t` covers `(t−1, t]`,
    /// so it is counted at `t − 1`.
    pub(crate) fn add(&mut self, step: &Step) {
        let minute = (step.t.saturating_sub(1).saturating_sub(self.t0) / 60) as usize;
        while self.minutes.len() <= minute {
            let m = self.minutes.len() as u64;
            self.minutes.push(Minute {
                minute: m,
                ..Minute::default()
            });
        }
        let m = &mut self.minutes[minute];
        for r in &step.requests {
            let kind = Kind::of(r);
            if kind.is_readop() {
                m.readops += 1;
                if r.status >= 400 {
                    m.failed += 1;
                }
            }
            match kind {
                Kind::Head => m.head += 1,
                Kind::ManifestGet => m.manifest_get += 1,
                Kind::BlobGet => m.blob_get += 1,
                Kind::DataGet => m.data_get += 1,
                Kind::Token => m.token += 1,
                Kind::Other => {}
            }
        }
    }

    /// The busiest minute's ReadOps.
    pub(crate) fn peak_readops(&self) -> u64 {
        self.minutes.iter().map(|m| m.readops).max().unwrap_or(0)
    }

    /// Mean ReadOps per minute over the whole minutes.
    pub(crate) fn mean_readops(&self) -> f64 {
        if self.minutes.is_empty() {
            return 0.0;
        }
        self.minutes.iter().map(|m| m.readops).sum::<u64>() as f64 / self.minutes.len() as f64
    }
}

/// Smallest, mean and largest of some per-device counts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spread {
    pub min: u64,
    pub mean: f64,
    pub median: u64,
    pub max: u64,
}

impl Spread {
    pub(crate) fn of(values: &[u64]) -> Self {
        let mut v = values.to_vec();
        v.sort_unstable();
        let n = v.len().max(1);
        Spread {
            min: v.first().copied().unwrap_or(0),
            mean: v.iter().sum::<u64>() as f64 / n as f64,
            median: v.get(v.len() / 2).copied().unwrap_or(0),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// One device in a rollout.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceAdoption {
    pub device_id: String,
    /// `edgepull_core::rollout::slot(device_id, digest, window_secs)`.
    pub slot: u64,
    /// Seconds after the tag moved when the device's first check saw the new digest.
    pub first_seen: Option<u64>,
    /// `first_seen + slot`.
    pub expected: Option<u64>,
    /// Seconds after the tag moved when the device's store made it current.
    pub adopted: Option<u64>,
    /// What the daemon itself announced (`status.json` `adopt_at`), same origin.
    pub daemon_adopt_at: Option<u64>,
}

/// One version of the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version {
    /// The index: what a `HEAD` of the tag returns, the digest a rollout slot is for.
    pub index: Digest,
    /// The arm64 manifest in it: what a device's store records as current.
    pub arm64: Digest,
}

/// Follows which devices made `target` current, and when.
pub(crate) struct Adoption {
    pub target: Version,
    /// Unix seconds (virtual) when the tag moved.
    pub moved_unix: u64,
    pub devices: Vec<DeviceAdoption>,
}

impl Adoption {
    pub(crate) fn new(fleet: &Fleet<'_>, target: Version, window_secs: u64) -> Self {
        let devices = fleet
            .devices
            .iter()
            .map(|d| DeviceAdoption {
                device_id: d.id.clone(),
                slot: slot(&d.id, &target.index, window_secs),
                first_seen: None,
                expected: None,
                adopted: None,
                daemon_adopt_at: None,
            })
            .collect();
        Self {
            target,
            moved_unix: crate::clock::now_unix(),
            devices,
        }
    }

    /// Look at every device whose job ended in `step` and has not adopted yet.
    pub(crate) async fn observe(&mut self, fleet: &Fleet<'_>, step: &Step) {
        let (index, arm64) = (self.target.index.to_string(), self.target.arm64.to_string());
        let at = crate::clock::now_unix() - self.moved_unix;
        for &i in &step.ended {
            if self.devices[i].adopted.is_some() {
                continue;
            }
            let img: ImageStatus = fleet.image_after_jobs(i).await;
            let d = &mut self.devices[i];
            let current = img.current_digest.as_deref() == Some(arm64.as_str());
            let pending = img.pending_digest.as_deref() == Some(index.as_str());
            if (current || pending) && d.first_seen.is_none() {
                d.first_seen = Some(at);
                d.expected = Some(at + d.slot);
            }
            if pending && d.daemon_adopt_at.is_none() {
                d.daemon_adopt_at = img.adopt_at.map(|s| s.unix.saturating_sub(self.moved_unix));
            }
            if current {
                d.adopted = Some(at);
            }
        }
    }

    pub(crate) fn all_adopted(&self) -> bool {
        self.devices.iter().all(|d| d.adopted.is_some())
    }

    /// Every device has adopted, and `tail` seconds have passed since the last one did
    /// (`elapsed` is seconds since the scenario's start).
    pub(crate) fn settled(&self, elapsed: u64, tail: u64) -> bool {
        self.last_adoption()
            .is_some_and(|last| self.all_adopted() && elapsed >= last + tail)
    }

    pub(crate) fn adopted_count(&self) -> usize {
        self.devices.iter().filter(|d| d.adopted.is_some()).count()
    }

    pub(crate) fn last_adoption(&self) -> Option<u64> {
        self.devices.iter().filter_map(|d| d.adopted).max()
    }

    /// `|adopted − (first_seen + slot)|` at its largest, over the devices that adopted.
    pub(crate) fn max_deviation(&self) -> Option<u64> {
        self.devices
            .iter()
            .filter_map(|d| Some(d.adopted?.abs_diff(d.expected?)))
            .max()
    }

    /// Devices whose announced `adopt_at` differs from `first_seen + slot` computed here.
    pub(crate) fn announced_mismatches(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.daemon_adopt_at.is_some() && d.daemon_adopt_at != d.expected)
            .count()
    }

    /// Pairs adopted in the other order than `first_seen + slot` says (ties excluded).
    pub(crate) fn order_inversions(&self) -> u64 {
        let done: Vec<(u64, u64)> = self
            .devices
            .iter()
            .filter_map(|d| Some((d.expected?, d.adopted?)))
            .collect();
        let mut n = 0;
        for (i, a) in done.iter().enumerate() {
            for b in &done[i + 1..] {
                if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The canaries: the `share` of devices with the smallest slots.
    pub(crate) fn canaries(&self, share: f64) -> Canaries {
        let n = self.devices.len();
        let k = ((n as f64 * share).ceil() as usize).clamp(1, n.max(1));
        let mut by_slot: Vec<usize> = (0..n).collect();
        by_slot.sort_by_key(|&i| (self.devices[i].slot, i));
        let canary: Vec<usize> = by_slot[..k.min(n)].to_vec();
        let mut by_adoption: Vec<usize> = (0..n).filter(|&i| self.devices[i].adopted.is_some()).collect();
        by_adoption.sort_by_key(|&i| (self.devices[i].adopted, i));
        let first_k: Vec<usize> = by_adoption.iter().take(k).copied().collect();
        let in_first = first_k.iter().filter(|i| canary.contains(i)).count();
        let adopted_of = |set: &mut dyn Iterator<Item = usize>| -> Vec<u64> {
            set.filter_map(|i| self.devices[i].adopted).collect()
        };
        let canary_times = adopted_of(&mut canary.iter().copied());
        let other_times = adopted_of(&mut (0..n).filter(|i| !canary.contains(i)));
        Canaries {
            share,
            count: k,
            max_slot: canary.last().map_or(0, |&i| self.devices[i].slot),
            last_canary_adopted: canary_times.iter().copied().max(),
            first_other_adopted: other_times.iter().copied().min(),
            median_other_adopted: Spread::of(&other_times).median,
            first_adopters_that_are_canaries: in_first,
            slot_adoption_rank_correlation: self.rank_correlation(),
        }
    }

    /// Spearman's rank correlation between slot and adoption time.
    fn rank_correlation(&self) -> f64 {
        let pairs: Vec<(u64, u64)> = self
            .devices
            .iter()
            .filter_map(|d| Some((d.slot, d.adopted?)))
            .collect();
        let ranks = |vals: Vec<u64>| -> Vec<f64> {
            let mut idx: Vec<usize> = (0..vals.len()).collect();
            idx.sort_by_key(|&i| vals[i]);
            let mut r = vec![0.0; vals.len()];
            let mut i = 0;
            while i < idx.len() {
                let mut j = i;
                while j + 1 < idx.len() && vals[idx[j + 1]] == vals[idx[i]] {
                    j += 1;
                }
                let mean = (i + j) as f64 / 2.0;
                for k in &idx[i..=j] {
                    r[*k] = mean;
                }
                i = j + 1;
            }
            r
        };
        let a = ranks(pairs.iter().map(|p| p.0).collect());
        let b = ranks(pairs.iter().map(|p| p.1).collect());
        let n = a.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        if va == 0.0 || vb == 0.0 {
            return 0.0;
        }
        cov / (va.sqrt() * vb.sqrt())
    }
}

/// How the devices with the earliest slots fared.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Canaries {
    /// Share of the fleet counted as canaries (the smallest slots).
    pub share: f64,
    pub count: usize,
    /// The largest canary slot, seconds.
    pub max_slot: u64,
    /// Seconds after the move when the last canary adopted.
    pub last_canary_adopted: Option<u64>,
    /// Seconds after the move when the first other device adopted.
    pub first_other_adopted: Option<u64>,
    pub median_other_adopted: u64,
    /// Of the first `count` devices to adopt, how many are canaries.
    pub first_adopters_that_are_canaries: usize,
    /// Spearman's rank correlation of slot and adoption time.
    pub slot_adoption_rank_correlation: f64,
}
