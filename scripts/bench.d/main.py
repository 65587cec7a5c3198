"""scripts/bench's measuring half: run by scripts/bench (which installs the tools and
builds the binaries) inside a private mount namespace. See docs/benchmarks.md."""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

import measure
import report
from world import PLATFORM, World, log

MiB = 1 << 20
GiB = 1 << 30

# (tag, title, layer sizes) for the full run and for --quick.
IMAGES_FULL = [
    ("big", "1 GiB in 8 layers", [128 * MiB] * 8),
    ("many", "200 × 64 KiB layers", [64 << 10] * 200),
    ("small", "10 MiB in 3 layers", [4 * MiB, 4 * MiB, 2 * MiB]),
]
IMAGES_QUICK = [
    ("big", "64 MiB in 8 layers", [8 * MiB] * 8),
    ("many", "40 × 64 KiB layers", [64 << 10] * 40),
    ("small", "10 MiB in 3 layers", [4 * MiB, 4 * MiB, 2 * MiB]),
]
# For the ARM instruction counts: the difference between this image and `small` gives
# the instructions per byte with the fixed costs (start-up, TLS handshakes, token,
# manifests) taken out.
ARM_IMAGE_FULL = ("arm", "64 MiB in 2 layers", [32 * MiB] * 2)
ARM_IMAGE_QUICK = ("arm", "26 MiB in 2 layers", [13 * MiB] * 2)

HUGE_RATE = "1000GiB"
# The static build for x86-64: musl, statically linked, like the ARM binaries we ship.
STATIC_TRIPLE = "x86_64-unknown-linux-musl"
STATIC_LABEL = "edgepull pull (static musl build)"


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# ----------------------------------------------------------------------------------------
# the contenders


class Contender:
    """One way of pulling an image: prepare a fresh destination, run, measure."""

    key = ""
    label = ""

    def __init__(self, bench):
        self.b = bench

    def dest(self, tag):
        d = os.path.join(self.b.dest_root, f"{self.key}-{tag}")
        shutil.rmtree(d, ignore_errors=True)
        return d

    def run(self, tag):
        raise NotImplementedError


class Edgepull(Contender):
    def __init__(self, bench, key, label, binary, extra_args=()):
        super().__init__(bench)
        self.key, self.label, self.binary, self.extra = key, label, binary, list(extra_args)

    def run(self, tag):
        store = self.dest(tag)
        cfg = os.path.join(self.b.scratch, f"{self.key}.config.json")
        with open(cfg, "w") as f:
            json.dump(self.b.world.edgepull_config(store), f)
        measure.drop_dirty()
        r = measure.run([self.binary, "--config", cfg, "pull", "--no-progress", *self.extra,
                         self.b.world.ref(tag)], env=self.b.env,
                        stdout_path=os.path.join(self.b.scratch, "edgepull.out"))
        shutil.rmtree(store)
        return r


class Skopeo(Contender):
    key, label = "skopeo", "skopeo copy"

    def run(self, tag):
        dest = self.dest(tag)
        w = self.b.world
        measure.drop_dirty()
        r = measure.run(["skopeo", "--insecure-policy", "--override-os", "linux",
                         "--override-arch", "arm64", "copy", "--quiet",
                         "--src-cert-dir", w.pki.cert_dir,
                         "--src-creds", f"{w.device[0]}:{w.device[1]}",
                         f"docker://{w.ref(tag)}", f"oci:{dest}:{tag}"], env=self.b.env)
        shutil.rmtree(dest)
        return r


class Oras(Contender):
    """oras-py (`Registry.pull`, sequential, no digest check, no fsync, layers only), from a
    virtualenv scripts/bench makes (`--oras-python`)."""

    key, label = "oras", "oras-py pull (no verify)"

    def run(self, tag):
        dest = self.dest(tag)
        w = self.b.world
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oras_pull.py")
        measure.drop_dirty()
        r = measure.run([self.b.args.oras_python, script, w.login, w.ref(tag), dest,
                         w.device[0], w.password_file, w.pki.ca], env=self.b.env)
        shutil.rmtree(dest)
        return r


class Ctr(Contender):
    """`ctr content fetch` against a containerd started for this run only (fresh content
    store). ctr downloads; containerd hashes and writes, so its CPU and write_bytes
    deltas are added, and its VmHWM is added to ctr's peak RSS."""

    key, label = "ctr", "ctr content fetch"

    def run(self, tag):
        b, w = self.b, self.b.world
        root = self.dest(tag)
        state = "/run/edgepull-bench-containerd"
        shutil.rmtree(state, ignore_errors=True)
        os.makedirs(state)
        addr = os.path.join(state, "containerd.sock")
        cfg = os.path.join(b.scratch, "containerd.toml")
        with open(cfg, "w") as f:
            f.write(f'version = 2\nroot = "{root}"\nstate = "{state}"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri", '
                    '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
                    '"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]\n'
                    f'[grpc]\n  address = "{addr}"\n')
        d = w.procs.spawn("containerd", ["containerd", "--config", cfg],
                          os.path.join(b.scratch, "containerd.log"))
        ctr = ["ctr", "--address", addr, "--namespace", "bench"]
        deadline = time.monotonic() + 30
        while subprocess.run(ctr + ["version"], capture_output=True).returncode != 0:
            if d.poll() is not None or time.monotonic() > deadline:
                raise measure.Failed(f"containerd did not start: see {b.scratch}/containerd.log")
            time.sleep(0.1)
        measure.drop_dirty()
        io0, cpu0 = measure.read_io(d.pid), measure.read_stat_cpu(d.pid)
        r = measure.run(ctr + ["content", "fetch", "--user", f"{w.device[0]}:{w.device[1]}",
                               "--tlscacert", w.pki.ca, "--platform", PLATFORM, w.ref(tag)],
                        env=b.env, stdout_path=os.path.join(b.scratch, "ctr.out"))
        io1, cpu1 = measure.read_io(d.pid), measure.read_stat_cpu(d.pid)
        hwm = measure.kib(measure.read_status(d.pid)["VmHWM"])
        w.procs.stop(d)
        r["written"] += io1["write_bytes"] - io0["write_bytes"]
        r["cpu"] += cpu1 - cpu0
        r["daemon_cpu"] = cpu1 - cpu0
        r["daemon_hwm_kib"] = hwm
        r["rss_kib"] += hwm
        shutil.rmtree(root)
        shutil.rmtree(state, ignore_errors=True)
        return r


class Floor(Contender):
    """curl of the same blobs (config and layers) straight from the data endpoint over
    TLS, 3 at a time on kept-alive connections (edgepull's default concurrency), to disk,
    then fdatasync of every file (`sync -d`). No hashing, no token, no manifests."""

    key, label = "floor", "floor (curl + fsync)"

    def run(self, tag):
        b, w = self.b, self.b.world
        dest = self.dest(tag)
        os.makedirs(dest)
        cfg = os.path.join(b.scratch, f"curl-{tag}.cfg")
        with open(cfg, "w") as f:
            for digest, _ in w.images[tag]["blobs"]:
                f.write(f'url = "{w.blob_url(digest)}"\noutput = "{dest}/{digest[7:]}"\n')
        measure.drop_dirty()
        r = measure.run(["sh", "-c", 'curl --silent --show-error --fail --parallel '
                         '--parallel-max 3 --cacert "$1" -K "$2" && cd "$3" && sync -d -- *',
                         "sh", w.pki.ca, cfg, dest], env=b.env)
        shutil.rmtree(dest)
        return r


# ----------------------------------------------------------------------------------------
# sections


class Bench:
    def __init__(self, args):
        self.args = args
        self.scratch = args.scratch
        self.dest_root = os.path.join(self.scratch, "dest")
        os.makedirs(self.dest_root, exist_ok=True)
        self.tmp = os.path.join(self.scratch, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        # edgepull logs as it does by default (info, plain lines on stderr, collected here).
        self.env = dict(os.environ, TMPDIR=self.tmp)
        for k in ("EDGEPULL_CONFIG", "EDGEPULL_LOG"):
            self.env.pop(k, None)
        with open(args.builds) as f:
            self.builds = json.load(f)
        self.results = {"quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                        "machine": machine(self.scratch, self.args.oras_python), "builds": self.builds,
                        "load_before": os.getloadavg()}
        self.world = None

    def native(self, variant):
        return self.build("native", variant)

    def build(self, triple, variant="release"):
        for b in self.builds:
            if b["triple"] == triple and b["variant"] == variant:
                return b
        return None

    def static(self):
        """The static x86-64 build (musl, as shipped for the boards), when it was built."""
        return self.build(STATIC_TRIPLE)

    def start_world(self):
        storage_base = self.args.storage
        os.makedirs(storage_base, exist_ok=True)
        self.storage_base = storage_base
        log(f"starting the world (registry storage in {storage_base})")
        self.world = World(os.path.join(self.scratch, "world"), storage_base)
        images = IMAGES_QUICK if self.args.quick else IMAGES_FULL
        arm = ARM_IMAGE_QUICK if self.args.quick else ARM_IMAGE_FULL
        if "arm" in self.args.sections:
            images = images + [arm]
        self.results["images"] = {}
        for tag, title, sizes in images:
            t0 = time.monotonic()
            n = self.world.push_image(tag, sizes)
            log(f"pushed {tag} ({title}): {n} bytes, {len(sizes)} layers "
                f"in {time.monotonic() - t0:.1f}s")
            self.results["images"][tag] = {"title": title, "bytes": n, "layers": len(sizes)}

    def stop(self):
        if self.world:
            self.world.stop()
        shutil.rmtree(getattr(self, "storage_base", "/nonexistent"), ignore_errors=True)

    # -- peers: edgepull vs skopeo vs ctr vs the floor, alternating --------------------------

    def peers(self):
        rel = self.native("release")
        alts = [b for b in self.builds if b["triple"] == "native" and b["variant"] != "release"]
        images = [t for t, _, _ in (IMAGES_QUICK if self.args.quick else IMAGES_FULL)]
        runs = self.args.runs
        out = {}
        for tag in images:
            cs = [Edgepull(self, "edgepull", "edgepull pull", rel["path"]),
                  Edgepull(self, "edgepull_cap", f"edgepull pull --max-rate {HUGE_RATE}",
                           rel["path"], ["--max-rate", HUGE_RATE])]
            static = self.static()
            if static:
                cs.append(Edgepull(self, "edgepull_static", STATIC_LABEL, static["path"]))
            if tag == "big":
                cs += [Edgepull(self, f"edgepull_{b['variant']}", f"edgepull pull ({b['label']})",
                                b["path"]) for b in alts]
            cs += [Skopeo(self), Ctr(self)]
            if self.args.oras_python:
                cs.append(Oras(self))
            cs.append(Floor(self))
            per = {c.key: [] for c in cs}
            log(f"{tag}: warm-up, then {runs} rounds of {' '.join(c.key for c in cs)}")
            for rnd in range(runs + 1):
                for c in cs:
                    s0 = self.server_cpu()
                    r = c.run(tag)
                    r["server_cpu"] = self.server_cpu() - s0
                    if rnd > 0:
                        per[c.key].append(r)
                if rnd > 0:
                    log(f"  round {rnd}: " + "  ".join(
                        f"{k} {per[k][-1]['wall']:.2f}s" for k in per))
            out[tag] = {"labels": {c.key: c.label for c in cs},
                        "runs": per,
                        "median": {k: measure.summarize(v) for k, v in per.items()}}
        out["ciphers"] = self.world.nginx_ciphers()
        self.results["peers"] = out

    def server_cpu(self):
        """CPU seconds the login server and the data endpoint have used so far."""
        return sum(measure.read_stat_cpu(p) for p in self.world.server_pids())

    # -- openssl speed: the CPU floor --------------------------------------------------------

    def openssl(self):
        secs = "1" if self.args.quick else "3"
        out = {}
        for alg in ("sha256", "aes-128-gcm", "aes-256-gcm"):
            text = sh(["openssl", "speed", "-mr", "-seconds", secs, "-bytes", "16384",
                       "-evp", alg])
            # "+F:<n>:<name>:<bytes/s for 16384-byte blocks>"
            m = re.search(r"^\+F:\d+:[^:]+:([0-9.]+)", text, re.M)
            out[alg] = float(m.group(1)) if m else None
            log(f"openssl speed -evp {alg}: {out[alg] and out[alg] / MiB:.0f} MiB/s")
        self.results["openssl"] = out

    # -- the idle daemon ---------------------------------------------------------------------

    def idle(self):
        """The daemon at rest after its first sync, for the glibc build and the static one."""
        out = []
        for label, build in (("glibc (dynamic)", self.native("release")),
                             ("static (musl)", self.static())):
            if build:
                out.append(dict(self.idle_one(build["path"]), build=label))
        self.results["idle"] = out

    def idle_one(self, binary):
        secs = 10 if self.args.quick else 60
        store = os.path.join(self.dest_root, "idle")
        shutil.rmtree(store, ignore_errors=True)
        refs = [self.world.ref("small"), self.world.ref("big")]
        cfg = os.path.join(self.scratch, "idle.config.json")
        with open(cfg, "w") as f:
            json.dump(self.world.edgepull_config(store, refs, {"sync": {"interval_secs": 86400}}), f)
        logf = os.path.join(self.scratch, "idle.log")
        d = self.world.procs.spawn("edgepull run", [binary, "--config", cfg, "run"], logf,
                                   env=self.env)
        index = os.path.join(store, "oci", "index.json")
        deadline = time.monotonic() + 600
        while True:
            if d.poll() is not None:
                raise measure.Failed(f"edgepull run exited: {open(logf).read()[-2000:]}")
            try:
                with open(index) as f:
                    names = {m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                             for m in json.load(f).get("manifests", [])}
                if all(r in names for r in refs):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise measure.Failed("edgepull run did not finish its first sync")
            time.sleep(0.2)
        # Let the post-sync work (status, gc) finish and the blocking pool's idle threads
        # time out (tokio keeps them 10 s), so the window sees the daemon at rest.
        time.sleep(15)
        s0 = measure.read_status(d.pid)
        cpu0 = measure.read_stat_cpu(d.pid)
        log(f"idle daemon ({binary}): both images synced; watching {secs}s")
        vol, invol, peak, exited = measure.watch_switches(d.pid, secs)
        s1 = measure.read_status(d.pid)
        cpu1 = measure.read_stat_cpu(d.pid)
        self.world.procs.stop(d)
        shutil.rmtree(store, ignore_errors=True)
        r = {
            "seconds": secs, "images": ["small", "big"],
            "vmrss_kib_start": measure.kib(s0["VmRSS"]), "vmrss_kib": measure.kib(s1["VmRSS"]),
            "vmhwm_kib": measure.kib(s1["VmHWM"]), "threads": int(s1["Threads"]),
            "rss_anon_kib": measure.kib(s1["RssAnon"]), "rss_file_kib": measure.kib(s1["RssFile"]),
            "threads_max": peak, "threads_exited": exited,
            "voluntary": vol, "involuntary": invol, "cpu_seconds": cpu1 - cpu0,
        }
        log(f"idle: {r}")
        return r

    # -- ARM instruction counts under qemu-user ----------------------------------------------

    def arm(self):
        plugin = self.args.insn_plugin
        out = []
        for b in self.builds:
            if b["triple"] == "native" or not b.get("qemu"):
                continue
            counts = {}
            for tag in ("small", "arm"):
                store = os.path.join(self.dest_root, f"arm-{tag}")
                shutil.rmtree(store, ignore_errors=True)
                cfg = os.path.join(self.scratch, "arm.config.json")
                with open(cfg, "w") as f:
                    json.dump(self.world.edgepull_config(store), f)
                res = os.path.join(self.scratch, "insn.txt")
                if os.path.exists(res):
                    os.unlink(res)
                t0 = time.monotonic()
                p = subprocess.run(b["qemu"] + ["-plugin", f"{plugin},out={res}", b["path"],
                                                "--config", cfg, "pull", "--no-progress",
                                                self.world.ref(tag)],
                                   env=self.env, capture_output=True, text=True)
                wall = time.monotonic() - t0
                shutil.rmtree(store, ignore_errors=True)
                if p.returncode != 0:
                    raise measure.Failed(f"{b['name']} under qemu: {p.stderr[-2000:]}")
                with open(res) as f:
                    counts[tag] = {"insns": int(f.read().split()[0]), "wall": wall,
                                   "bytes": self.world.images[tag]["bytes"]}
            d_insn = counts["arm"]["insns"] - counts["small"]["insns"]
            d_bytes = counts["arm"]["bytes"] - counts["small"]["bytes"]
            row = {"name": b["name"], "triple": b["triple"], "variant": b["variant"],
                   "label": b["label"], "cpu": " ".join(b["qemu"][1:]), "size": b.get("size"),
                   "counts": counts, "per_byte": d_insn / d_bytes,
                   "fixed": counts["small"]["insns"] - d_insn / d_bytes * counts["small"]["bytes"]}
            log(f"{b['name']}: {row['per_byte']:.2f} instructions/byte, "
                f"fixed {row['fixed'] / 1e6:.0f} M")
            out.append(row)
        self.results["arm"] = out


def serve(bench):
    """--serve: write a config per image, say how to pull, and wait to be stopped."""
    w = bench.world
    store = os.path.join(bench.dest_root, "serve")
    cfg = os.path.join(bench.scratch, "serve.config.json")
    with open(cfg, "w") as f:
        json.dump(w.edgepull_config(store), f, indent=1)
    log(f"serving; the world's processes are in the mount namespace of pid {os.getpid()} "
        f"(nsenter -t {os.getpid()} -m ... for skopeo, ctr, curl)")
    for tag in w.images:
        print(f"  edgepull --config {cfg} pull --no-progress {w.ref(tag)}", flush=True)
    print("  (Ctrl-C or SIGTERM stops)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


def machine(scratch, oras_python=None):
    cpu = sh(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"])
    fs = sh(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", scratch])
    mem = sh(["sh", "-c", "awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"])
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "os": sh(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "dest_fs": fs,
        "versions": {
            "rustc": sh(["rustc", "--version"]),
            "skopeo": sh(["skopeo", "--version"]),
            "containerd": sh(["containerd", "--version"]),
            "curl": sh(["curl", "--version"]).splitlines()[0] if sh(["curl", "--version"]) else "?",
            "nginx": sh(["sh", "-c", "nginx -v 2>&1"]),
            "docker-registry": sh(["docker-registry", "--version"]),
            "openssl": sh(["openssl", "version"]),
            "qemu": sh(["sh", "-c", "qemu-aarch64 --version | head -1"]),
            "oras": sh([oras_python, "-c", "import oras.version as v; print(v.__version__)"])
            if oras_python else "?",
        },
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--storage", required=True, help="where the registry storage goes")
    ap.add_argument("--builds", required=True)
    ap.add_argument("--insn-plugin")
    ap.add_argument("--oras-python", help="python of a virtualenv with oras-py installed")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="peers,openssl,idle,arm")
    ap.add_argument("--docs", help="the markdown file to (re)write")
    ap.add_argument("--svg", help="the chart to write")
    ap.add_argument("--serve", action="store_true", help="start the world and wait")
    args = ap.parse_args()
    args.sections = args.sections.split(",")
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.start_world()
        if args.serve:
            serve(bench)
            return
        for section in ("peers", "openssl", "idle", "arm"):
            if section in args.sections:
                getattr(bench, section)()
    finally:
        bench.stop()
    bench.results["load_after"] = os.getloadavg()
    bench.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    with open(os.path.join(args.scratch, "results.json"), "w") as f:
        json.dump(bench.results, f, indent=1)
    print(report.table(bench.results))
    if args.docs:
        report.write_docs(bench.results, args.docs, args.svg)
        log(f"wrote {args.docs} and {args.svg}")


if __name__ == "__main__":
    main()
