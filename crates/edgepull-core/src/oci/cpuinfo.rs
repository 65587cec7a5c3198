//! Refining the default platform from `/proc/cpuinfo` on 32-bit ARM.
//!
//! Owns: reading the ARM architecture version out of cpuinfo text and lowering an arm/v7
//! build's default platform to arm/v6 on an ARMv6 CPU. Pure: the caller reads the file
//! (`std::fs::read_to_string("/proc/cpuinfo").ok()`) and passes the text.
//!
//! The trap: ARM1176 (Raspberry Pi Zero / 1, BCM2835) uses the "revised" CPUID scheme, so
//! 32-bit Linux reports `CPU architecture: 7` for it although it is an ARMv6 core. Its
//! `model name` (`ARMv6-compatible processor …`) and its part number (0xb76) tell the truth,
//! so those win over the `CPU architecture` field.
//!
//! In practice the arm/v7 binary dies with SIGILL on an ARMv6 CPU before `main` (seen under
//! `qemu-arm -cpu arm1176`), so Pi Zero / Pi 1 users need the arm/v6 build, whose default is
//! arm/v6 already; the lowering here is a safety net for a v7 build that does start there.

use super::Platform;

/// The ARM architecture variant (`"v5"`, `"v6"`, `"v7"` or `"v8"`) described by `/proc/cpuinfo`
/// text, or `None` when the text names no ARM CPU this function understands.
///
/// Per processor entry, in this order:
/// 1. `model name` (or the `Processor` line of older kernels) saying ARMv6, or an ARM Ltd
///    ARM11 part number (implementer 0x41, part 0xb02/0xb36/0xb56/0xb76) → `"v6"`.
/// 2. `CPU architecture`: `7` → `"v7"`, `8` (and `AArch64`, from old arm64 kernels) → `"v8"`,
///    `6`/`6TEJ`/… → `"v6"`, `5TE`/… → `"v5"`.
/// 3. Otherwise the `ARMvN` in the model name.
///
/// With several entries the lowest variant wins (what every core can run).
pub fn arm_variant_from_cpuinfo(text: &str) -> Option<&'static str> {
    let mut lowest: Option<u8> = None;
    let mut entry = Entry::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(v) = entry.arch_version() {
                lowest = Some(lowest.map_or(v, |l| l.min(v)));
            }
            entry = Entry::default();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            // Case matters: `processor : 0` is the index, `Processor : ARMv6…` (kernels before
            // 3.8) is the model.
            "model name" | "Processor" => entry.model = Some(value),
            "CPU architecture" => entry.arch = Some(value),
            "CPU implementer" => entry.implementer = parse_hex(value),
            "CPU part" => entry.part = parse_hex(value),
            _ => {}
        }
    }
    match lowest? {
        5 => Some("v5"),
        6 => Some("v6"),
        7 => Some("v7"),
        _ => Some("v8"),
    }
}

/// The default platform for this process: `build` (normally [`Platform::host`]), except that
/// an arm/v7 build on a CPU that cpuinfo shows to be ARMv6 gets arm/v6, so that it pulls
/// images the CPU can run. Never raises the variant above the build's, and changes nothing
/// for other architectures, or when `cpuinfo` is absent or says nothing useful.
pub fn default_platform(build: &Platform, cpuinfo: Option<&str>) -> Platform {
    let is_arm_v7 = build.architecture == "arm" && build.variant == "v7";
    if is_arm_v7 && cpuinfo.and_then(arm_variant_from_cpuinfo) == Some("v6") {
        return Platform::normalized(&build.os, "arm", "v6");
    }
    build.clone()
}

/// The fields of one processor entry that matter here.
#[derive(Default)]
struct Entry<'a> {
    model: Option<&'a str>,
    arch: Option<&'a str>,
    implementer: Option<u32>,
    part: Option<u32>,
}

impl Entry<'_> {
    /// The architecture version this entry describes, e.g. 6 for ARMv6.
    fn arch_version(&self) -> Option<u8> {
        /// ARM1176, ARM1156, ARM1136 and ARM11 MPCore: ARMv6 cores.
        const ARM11_PARTS: [u32; 4] = [0xb76, 0xb56, 0xb36, 0xb02];
        let model = self.model.and_then(model_version);
        let arm11 = self.implementer == Some(0x41) && self.part.is_some_and(|p| ARM11_PARTS.contains(&p));
        if model == Some(6) || arm11 {
            return Some(6);
        }
        self.arch.and_then(field_version).or(model)
    }
}

/// `CPU architecture` values: `7`, `8`, `6TEJ`, `5TE`, `AArch64`.
fn field_version(value: &str) -> Option<u8> {
    if value.eq_ignore_ascii_case("aarch64") {
        return Some(8);
    }
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let version: u8 = value[..digits].parse().ok()?;
    (version >= 5).then_some(version)
}

/// `ARMv6-compatible processor rev 7 (v6l)`, `ARMv7 Processor rev 5 (v7l)`: the digit after
/// `ARMv`, else the one in the `(vNl)` / `(vNb)` suffix.
fn model_version(model: &str) -> Option<u8> {
    let lower = model.to_ascii_lowercase();
    let after = |marker: &str| {
        let start = lower.find(marker)? + marker.len();
        let digit = *lower.as_bytes().get(start)?;
        digit.is_ascii_digit().then(|| digit - b'0')
    };
    after("armv").or_else(|| after("(v")).filter(|v| *v >= 5)
}

fn parse_hex(value: &str) -> Option<u32> {
    let digits = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raspberry Pi Zero W, Raspberry Pi OS 32-bit: an ARMv6 core reported as architecture 7.
    const PI_ZERO: &str = "processor\t: 0
model name\t: ARMv6-compatible processor rev 7 (v6l)
BogoMIPS\t: 997.08
Features\t: half thumb fastmult vfp edsp java tls
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xb76
CPU revision\t: 7

Hardware\t: BCM2835
Revision\t: 9000c1
Serial\t\t: 00000000a1b2c3d4
Model\t\t: Raspberry Pi Zero W Rev 1.1
";

    /// Raspberry Pi 1 Model B on a 3.x kernel: `Processor` line, no `model name`.
    const PI_1_OLD_KERNEL: &str = "Processor\t: ARMv6-compatible processor rev 7 (v6l)
BogoMIPS\t: 697.95
Features\t: swp half thumb fastmult vfp edsp java tls
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xb76
CPU revision\t: 7

Hardware\t: BCM2708
Revision\t: 000e
Serial\t\t: 00000000a1b2c3d4
";

    /// The trap with the model name cut down: only the part number says ARM1176.
    const ARM1176_NO_MODEL: &str = "processor\t: 0
BogoMIPS\t: 997.08
CPU implementer\t: 0x41
CPU architecture: 7
CPU part\t: 0xb76
";

    /// An ARM1136 board whose kernel prints the old-style architecture name.
    const ARM1136_6TEJ: &str = "processor\t: 0
model name\t: ARMv6-compatible processor rev 5 (v6l)
CPU implementer\t: 0x41
CPU architecture: 6TEJ
CPU part\t: 0xb36
";

    /// Raspberry Pi 2 Model B (BCM2836, Cortex-A7), 32-bit kernel; two of four cores shown.
    const PI_2: &str = "processor\t: 0
model name\t: ARMv7 Processor rev 5 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xc07
CPU revision\t: 5

processor\t: 1
model name\t: ARMv7 Processor rev 5 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xc07
CPU revision\t: 5

Hardware\t: BCM2835
Revision\t: a01041
Model\t\t: Raspberry Pi 2 Model B Rev 1.1
";

    /// Raspberry Pi 3 Model B (Cortex-A53), 32-bit userland on an arm64 kernel (compat view).
    const PI_3_32BIT: &str = "processor\t: 0
model name\t: ARMv8 Processor rev 4 (v8l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

Hardware\t: BCM2835
Revision\t: a02082
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
";

    /// Raspberry Pi 3 Model B, 32-bit kernel: an ARMv8 core capped at 7 by the arm kernel.
    const PI_3_ARM_KERNEL: &str = "processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4
";

    /// Raspberry Pi 4 on a 64-bit kernel (native view: no model name).
    const PI_4_ARM64: &str = "processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
";

    /// An early arm64 kernel, which printed the architecture as a name.
    const OLD_ARM64: &str = "Processor\t: AArch64 Processor rev 4 (aarch64)
processor\t: 0
Features\t: fp asimd evtstrm
CPU implementer\t: 0x41
CPU architecture: AArch64
CPU variant\t: 0x0
CPU part\t: 0xd03
";

    /// An ARMv5 board (Marvell Kirkwood, e.g. a SheevaPlug).
    const KIRKWOOD: &str = "processor\t: 0
model name\t: Feroceon 88FR131 rev 1 (v5l)
BogoMIPS\t: 1191.11
Features\t: swp half thumb fastmult edsp
CPU implementer\t: 0x56
CPU architecture: 5TE
CPU variant\t: 0x2
CPU part\t: 0x131
";

    /// x86_64 has none of the ARM fields.
    const X86: &str = "processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme de pse tsc msr
";

    #[test]
    fn variant_table() {
        let cases = [
            ("pi zero (trap: arch 7 on ARMv6)", PI_ZERO, Some("v6")),
            ("pi 1, old kernel", PI_1_OLD_KERNEL, Some("v6")),
            ("arm1176 part number only", ARM1176_NO_MODEL, Some("v6")),
            ("arm1136 6TEJ", ARM1136_6TEJ, Some("v6")),
            ("pi 2", PI_2, Some("v7")),
            ("pi 3 32-bit, arm64 kernel", PI_3_32BIT, Some("v8")),
            ("pi 3 32-bit, arm kernel", PI_3_ARM_KERNEL, Some("v7")),
            ("pi 4 arm64", PI_4_ARM64, Some("v8")),
            ("old arm64 kernel", OLD_ARM64, Some("v8")),
            ("armv5", KIRKWOOD, Some("v5")),
            ("x86", X86, None),
            ("empty", "", None),
            ("garbage", "CPU architecture: banana\nmodel name: ???\n", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(arm_variant_from_cpuinfo(text), want, "{name}");
        }
    }

    #[test]
    fn field_and_format_details() {
        // CRLF line ends and no trailing newline.
        let crlf = "model name : ARMv6-compatible processor rev 7 (v6l)\r\nCPU architecture: 7";
        assert_eq!(arm_variant_from_cpuinfo(crlf), Some("v6"));
        // Only the architecture field.
        assert_eq!(arm_variant_from_cpuinfo("CPU architecture: 7\n"), Some("v7"));
        assert_eq!(arm_variant_from_cpuinfo("CPU architecture: 6\n"), Some("v6"));
        // Only the model name.
        let model_only = "model name : ARMv7 Processor rev 5 (v7l)\n";
        assert_eq!(arm_variant_from_cpuinfo(model_only), Some("v7"));
        // The lowercase `processor` index line is not a model name.
        assert_eq!(arm_variant_from_cpuinfo("processor : 6\n"), None);
        // ARM11 part number from another implementer is not ARM1176.
        let other = "CPU implementer : 0x51\nCPU architecture: 7\nCPU part : 0xb76\n";
        assert_eq!(arm_variant_from_cpuinfo(other), Some("v7"));
        // Mixed entries: the lowest wins.
        let mixed = format!("{PI_2}\n{ARM1176_NO_MODEL}");
        assert_eq!(arm_variant_from_cpuinfo(&mixed), Some("v6"));
    }

    #[test]
    fn default_platform_table() {
        let v7 = Platform::normalized("linux", "arm", "v7");
        let v6 = Platform::normalized("linux", "arm", "v6");
        let arm64 = Platform::normalized("linux", "arm64", "v8");
        let amd64 = Platform::normalized("linux", "amd64", "");
        let cases = [
            ("v7, pi zero: lowered", &v7, Some(PI_ZERO), &v6),
            ("v7, pi 1 old kernel: lowered", &v7, Some(PI_1_OLD_KERNEL), &v6),
            ("v7, pi 2", &v7, Some(PI_2), &v7),
            ("v7, pi 3 arch 8: not raised", &v7, Some(PI_3_32BIT), &v7),
            ("v7, pi 3 arm kernel", &v7, Some(PI_3_ARM_KERNEL), &v7),
            ("v7, armv5: only v6 lowers", &v7, Some(KIRKWOOD), &v7),
            ("v7, no cpuinfo", &v7, None, &v7),
            ("v7, unreadable cpuinfo", &v7, Some("garbage"), &v7),
            ("v6, pi 3: never raised", &v6, Some(PI_3_32BIT), &v6),
            ("v6, pi zero", &v6, Some(PI_ZERO), &v6),
            ("arm64, pi zero text: kept", &arm64, Some(PI_ZERO), &arm64),
            ("arm64, pi 4", &arm64, Some(PI_4_ARM64), &arm64),
            ("amd64", &amd64, Some(X86), &amd64),
        ];
        for (name, build, cpuinfo, want) in cases {
            assert_eq!(&default_platform(build, cpuinfo), want, "{name}");
        }
        assert_eq!(default_platform(&v7, Some(PI_ZERO)).to_string(), "linux/arm/v6");
    }
}
