//! Test images as an OCI image layout, written by hand: real ustar tar layers holding
//! random, incompressible files, so umoci can unpack them and the result can be compared
//! file by file. Layers are gzip (`...layer.v1.tar+gzip`, the usual kind; deflate "stored"
//! blocks, which is what any compressor emits for random bytes) or plain tar
//! (`...layer.v1.tar`), per [`Layout::set_gzip`]. Pushes use `skopeo copy
//! --preserve-digests`, so the digests computed here are the ones the registry serves.
//! (skopeo compresses plain tar layers on the way into a registry or an OCI layout unless
//! told to preserve digests; gzip layers it copies as they are.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgepull_core::oci::Digest;
use edgepull_testkit::random_bytes;
use serde_json::{Value, json};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A platform as the image spec writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plat {
    pub os: &'static str,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
}

pub(crate) const LINUX_AMD64: Plat = Plat {
    os: "linux",
    architecture: "amd64",
    variant: None,
};
pub(crate) const LINUX_ARM64: Plat = Plat {
    os: "linux",
    architecture: "arm64",
    variant: Some("v8"),
};
pub(crate) const LINUX_ARMV7: Plat = Plat {
    os: "linux",
    architecture: "arm",
    variant: Some("v7"),
};

impl Plat {
    fn json(&self) -> Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = self.variant {
            v["variant"] = variant.into();
        }
        v
    }
}

/// Files of one layer: path (relative, no leading `/`) → content.
pub(crate) type Files = BTreeMap<String, Vec<u8>>;

/// `n` files `dir/file-<i>.bin` of `size` random bytes each.
pub(crate) fn random_files(dir: &str, n: usize, size: usize) -> Files {
    (0..n)
        .map(|i| (format!("{dir}/file-{i}.bin"), random_bytes(size)))
        .collect()
}

/// One built layer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub files: Files,
    pub media_type: &'static str,
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// One built image (manifest + config + layers).
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub platform: Plat,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub config_size: u64,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Every file of the unpacked image (later layers win; none of ours overlap).
    pub(crate) fn files(&self) -> Files {
        self.layers.iter().flat_map(|l| l.files.clone()).collect()
    }

    /// Digests of manifest, config and layers.
    pub(crate) fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.manifest, self.config];
        v.extend(self.layers.iter().map(|l| l.digest));
        v
    }
}

/// One built index.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub digest: Digest,
    pub images: Vec<Image>,
}

impl Index {
    pub(crate) fn image(&self, p: &Plat) -> &Image {
        self.images
            .iter()
            .find(|i| i.platform == *p)
            .unwrap_or_else(|| panic!("no image for {p:?}"))
    }
}

/// An OCI image layout being written.
pub(crate) struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
    gzip: bool,
}

impl Layout {
    /// Create the layout directory.
    pub(crate) fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let layout = Self {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
            gzip: true,
        };
        layout.write_index();
        layout
    }

    /// Whether the layers of images added from now on are gzip (default) or plain tar.
    pub(crate) fn set_gzip(&mut self, gzip: bool) {
        self.gzip = gzip;
    }

    fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).expect("write blob");
        d
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
    }

    fn name(&mut self, tag: &str, media_type: &str, digest: Digest, size: u64) {
        self.refs.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }

    fn build_image(&self, platform: &Plat, layers: Vec<Files>) -> Image {
        let layers: Vec<Layer> = layers
            .into_iter()
            .map(|files| {
                let tar = tar(&files);
                let diff_id = Digest::of(&tar);
                let (media_type, blob) = if self.gzip {
                    (OCI_LAYER_TAR_GZIP, gzip_stored(&tar))
                } else {
                    (OCI_LAYER_TAR, tar)
                };
                Layer {
                    digest: self.blob(&blob),
                    size: blob.len() as u64,
                    media_type,
                    diff_id,
                    files,
                }
            })
            .collect();
        let mut config = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
            },
        });
        if let Some(v) = platform.variant {
            config["variant"] = v.into();
        }
        let config_bytes = config.to_string().into_bytes();
        let config_digest = self.blob(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = manifest.to_string().into_bytes();
        Image {
            platform: platform.clone(),
            manifest: self.blob(&manifest_bytes),
            manifest_size: manifest_bytes.len() as u64,
            config: config_digest,
            config_size: config_bytes.len() as u64,
            layers,
        }
    }

    /// Add a single-platform image under `tag`.
    pub(crate) fn image(&mut self, tag: &str, platform: &Plat, layers: Vec<Files>) -> Image {
        let image = self.build_image(platform, layers);
        self.name(tag, OCI_MANIFEST, image.manifest, image.manifest_size);
        image
    }

    /// Add an image index under `tag`, one image per platform.
    pub(crate) fn index(&mut self, tag: &str, images: Vec<(Plat, Vec<Files>)>) -> Index {
        let images: Vec<Image> = images
            .into_iter()
            .map(|(p, layers)| self.build_image(&p, layers))
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": images.iter().map(|i| json!({
                "mediaType": OCI_MANIFEST,
                "digest": i.manifest.to_string(),
                "size": i.manifest_size,
                "platform": i.platform.json(),
            })).collect::<Vec<_>>(),
        });
        let bytes = index.to_string().into_bytes();
        let digest = self.blob(&bytes);
        self.name(tag, OCI_INDEX, digest, bytes.len() as u64);
        Index { digest, images }
    }
}

/// A ustar archive of `files`, with an entry for every parent directory first.
pub(crate) fn tar(files: &Files) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for path in files.keys() {
        let mut at = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d)
            .unwrap_or(&[])
        {
            at.push_str(part);
            at.push('/');
            if !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
    }
    for dir in &dirs {
        out.extend_from_slice(&header(dir, 0, b'5', 0o755));
    }
    for (path, content) in files {
        out.extend_from_slice(&header(path, content.len() as u64, b'0', 0o644));
        out.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn header(name: &str, size: u64, kind: u8, mode: u32) -> [u8; 512] {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0"); // uid
    put(&mut h, 116, b"0000000\0"); // gid
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, format!("{:011o}\0", 1_767_225_600u64).as_bytes()); // 2026-01-01
    put(&mut h, 148, b"        "); // checksum placeholder
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"root");
    put(&mut h, 297, b"root");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// `data` as a gzip member (RFC 1952) of deflate stored blocks (RFC 1951 §3.2.4).
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(0xffff).peekable();
    if data.is_empty() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        // BFINAL on the last block, BTYPE=00; the rest of the byte is padding.
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}
