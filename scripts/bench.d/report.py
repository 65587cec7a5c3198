"""Tables, targets, the SVG chart and docs/benchmarks.md from a results dict."""

import html
import os

MiB = 1 << 20
GiB = 1 << 30

ORDER = ["edgepull", "edgepull_cap", "edgepull_static", "edgepull_z", "edgepull_ovr", "skopeo",
         "ctr", "oras", "floor"]
COLORS = {"edgepull": "#1f6feb", "edgepull_cap": "#6ea8fe", "edgepull_static": "#0a3069",
          "edgepull_z": "#9ec5fe",
          "edgepull_ovr": "#9ec5fe", "skopeo": "#d1242f", "ctr": "#bf8700", "oras": "#8250df",
          "floor": "#57606a"}

BEGIN = "<!-- scripts/bench: generated from here -->"
END = "<!-- scripts/bench: generated up to here -->"


def _keys(block):
    return [k for k in ORDER if k in block["median"]]


def peers_table(res):
    """Markdown table: one row per image and contender (medians)."""
    rows = ["| image | contender | wall s (min–max) | CPU s | peak RSS MiB | written / pulled "
            "| wall ÷ edgepull | server CPU s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tag, img in res.get("images", {}).items():
        block = res.get("peers", {}).get(tag)
        if not block:
            continue
        ep = block["median"]["edgepull"]
        for k in _keys(block):
            m = block["median"][k]
            pulled = img["bytes"]  # the floor fetches the same less the manifest (~1 KB)
            rows.append(
                f"| {img['title']} | {block['labels'][k]} | {m['wall']:.2f} "
                f"({m['wall_min']:.2f}–{m['wall_max']:.2f}) | {m['cpu']:.2f} "
                f"| {m['rss_kib'] / 1024:.1f} | {m['written'] / pulled:.3f} "
                f"| {m['wall'] / ep['wall']:.2f} | {m.get('server_cpu', 0.0):.2f} |")
    return "\n".join(rows)


def targets(res):
    """[(what, measured, target, ok)] for the issue's targets."""
    out = []
    peers = res.get("peers", {})
    big = peers.get("big")
    if big:
        m = big["median"]
        ep = m["edgepull"]
        pulled = res["images"]["big"]["bytes"]
        title = res["images"]["big"]["title"]
        out.append((f"{title}: wall ÷ skopeo", f"{ep['wall'] / m['skopeo']['wall']:.2f}", "≤ 0.55",
                    ep["wall"] / m["skopeo"]["wall"] <= 0.55))
        out.append((f"{title}: wall ÷ floor", f"{ep['wall'] / m['floor']['wall']:.2f}", "≤ 1.1",
                    ep["wall"] / m["floor"]["wall"] <= 1.1))
        cpu_gib = ep["cpu"] / (pulled / GiB)
        out.append((f"{title}: CPU-s per GiB", f"{cpu_gib:.2f}", "≤ 1.6", cpu_gib <= 1.6))
        out.append((f"{title}: peak RSS", f"{ep['rss_kib'] / 1024:.1f} MiB", "≤ 10 MiB",
                    ep["rss_kib"] <= 10 * 1024))
        st = m.get("edgepull_static")
        if st:
            out.append((f"{title}, static build: peak RSS", f"{st['rss_kib'] / 1024:.1f} MiB",
                        "≤ 10 MiB", st["rss_kib"] <= 10 * 1024))
            out.append((f"{title}, static build: wall ÷ skopeo",
                        f"{st['wall'] / m['skopeo']['wall']:.2f}", "≤ 0.55",
                        st["wall"] / m["skopeo"]["wall"] <= 0.55))
        out.append((f"{title}: written ÷ pulled", f"{ep['written'] / pulled:.3f}", "≤ 1.01",
                    ep["written"] / pulled <= 1.01))
        if "edgepull_cap" in m:
            r = m["edgepull_cap"]["wall"] / ep["wall"]
            out.append((f"{title}: wall with a huge --max-rate ÷ without", f"{r:.2f}",
                        "≈ 1 (no cost)", abs(r - 1) <= 0.05))
    many = peers.get("many")
    if many:
        m = many["median"]
        r = m["edgepull"]["wall"] / m["skopeo"]["wall"]
        out.append((f"{res['images']['many']['title']}: wall ÷ skopeo", f"{r:.2f}", "≤ 0.3",
                    r <= 0.3))
    for idle in idle_runs(res):
        who = f"idle daemon, {idle['build']}"
        out.append((f"{who}: VmRSS", f"{idle['vmrss_kib'] / 1024:.1f} MiB", "≤ 6 MiB",
                    idle["vmrss_kib"] <= 6 * 1024))
        wake = (idle["voluntary"] + idle["involuntary"]) / idle["seconds"]
        out.append((f"{who}: context switches over {idle['seconds']} s",
                    f"{idle['voluntary']} voluntary + {idle['involuntary']} involuntary "
                    f"({wake:.2f}/s)", "report", None))
    return out


def idle_runs(res):
    """The idle measurements, one per build (older results held a single one)."""
    i = res.get("idle")
    if isinstance(i, dict):
        return [dict(i, build="glibc (dynamic)")]
    return i or []


def targets_table(res):
    rows = ["| what | measured | target | met |", "| --- | --- | --- | --- |"]
    for what, got, want, ok in targets(res):
        mark = "" if ok is None else ("yes" if ok else "**no**")
        rows.append(f"| {what} | {got} | {want} | {mark} |")
    return "\n".join(rows)


def openssl_table(res):
    o = res.get("openssl")
    if not o:
        return ""
    rows = ["| `openssl speed -evp` (16 KiB blocks) | MiB/s | CPU-s per GiB |",
            "| --- | --- | --- |"]
    for alg, v in o.items():
        if v:
            rows.append(f"| {alg} | {v / MiB:.0f} | {GiB / v:.3f} |")
    if o.get("sha256") and o.get("aes-256-gcm"):
        f = GiB / o["sha256"] + GiB / o["aes-256-gcm"]
        rows.append(f"| sha256 + aes-256-gcm (hash and decrypt every byte once) | | {f:.3f} |")
    return "\n".join(rows)


def arm_table(res):
    rows = ["| binary | opt-level | stripped size | emulated CPU | instructions per byte pulled "
            "| fixed cost (M instructions) | small image: instructions, wall under qemu |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res.get("arm", []):
        small = r["counts"]["small"]
        size = f"{r['size']:,}" if r.get("size") else "?"
        rows.append(f"| {r['triple']} | {r['label']} | {size} | {r['cpu']} | {r['per_byte']:.2f} "
                    f"| {r['fixed'] / 1e6:.0f} | {small['insns'] / 1e6:.0f} M, {small['wall']:.1f} s |")
    return "\n".join(rows)


def sizes_table(res):
    rows = ["| target | profile | stripped bytes | MiB | build s |", "| --- | --- | --- | --- | --- |"]
    for b in res.get("builds", []):
        if b.get("size"):
            rows.append(f"| {b['triple']} | {b['label']} | {b['size']:,} | {b['size'] / MiB:.2f} "
                        f"| {b.get('build_secs', '?')} |")
    return "\n".join(rows)


def idle_table(res):
    runs = idle_runs(res)
    if not runs:
        return ""
    rows = ["| build | VmRSS at start → end | of which anonymous / file | VmHWM "
            "| threads (max, exited) | voluntary / involuntary switches | CPU |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for i in runs:
        rows.append(
            f"| {i['build']} | {i['vmrss_kib_start']:,} → {i['vmrss_kib']:,} kB "
            f"| {i.get('rss_anon_kib', 0):,} / {i.get('rss_file_kib', 0):,} kB "
            f"| {i['vmhwm_kib']:,} kB "
            f"| {i['threads']} ({i.get('threads_max', '?')}, {i.get('threads_exited', '?')}) "
            f"| {i['voluntary']} / {i['involuntary']} in {i['seconds']} s "
            f"| {i['cpu_seconds']:.2f} s |")
    return "\n".join(rows)


def table(res):
    """What the script prints at the end."""
    parts = ["", "== medians per image and contender", peers_table(res), "",
             "== targets", targets_table(res)]
    if res.get("openssl"):
        parts += ["", "== CPU floor", openssl_table(res)]
    if idle_runs(res):
        parts += ["", f"== idle daemon over {idle_runs(res)[0]['seconds']} s", idle_table(res)]
    if res.get("arm"):
        parts += ["", "== ARM under qemu-user (instruction counts)", arm_table(res)]
    if any(b.get("size") for b in res.get("builds", [])):
        parts += ["", "== binary sizes", sizes_table(res)]
    if res.get("peers", {}).get("ciphers"):
        parts += ["", "TLS on the data endpoint (nginx log): " + ", ".join(res["peers"]["ciphers"])]
    return "\n".join(parts)


SHORT = {"edgepull": "edgepull", "edgepull_cap": "edgepull, cap set",
         "edgepull_static": "edgepull, static musl",
         "edgepull_z": "edgepull, all opt z", "edgepull_ovr": "edgepull, 6 crates opt 3",
         "skopeo": "skopeo copy",
         "ctr": "ctr content fetch", "oras": "oras-py (no verify)", "floor": "floor (curl)"}


def svg(res):
    """Two panels of horizontal bars per image: median wall time and median CPU time per
    contender, each group scaled to its own largest value; labels give the value and the
    ratio to edgepull."""
    groups = [(tag, img, res["peers"][tag]) for tag, img in res.get("images", {}).items()
              if tag in res.get("peers", {})]
    bar_h, gap, left, width, gutter = 18, 26, 160, 300, 150
    x2 = left + width + gutter
    height = 50 + sum(len(_keys(b)) * bar_h + gap + 16 for _, _, b in groups) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{x2 + width + gutter}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">Median per pull '
           f'(shorter is better; label: value, ×edgepull)</text>',
           f'<text x="{left}" y="40" font-weight="bold">wall time (s)</text>',
           f'<text x="{x2}" y="40" font-weight="bold">CPU time, user + system (s)</text>']
    y = 50
    for tag, img, b in groups:
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">'
                   f'{html.escape(img["title"])}</text>')
        y += 18
        keys = _keys(b)
        for metric, x0 in (("wall", left), ("cpu", x2)):
            top = max(b["median"][k][metric] for k in keys) or 1
            ep = b["median"]["edgepull"][metric] or 1
            yy = y
            for k in keys:
                v = b["median"][k][metric]
                bw = max(1, width * v / top)
                if metric == "wall":
                    out.append(f'<text x="{left - 6}" y="{yy + 13}" text-anchor="end">'
                               f'{html.escape(SHORT.get(k, k))}</text>')
                out.append(f'<rect x="{x0}" y="{yy + 2}" width="{bw:.1f}" height="{bar_h - 4}" '
                           f'fill="{COLORS.get(k, "#888")}"/>')
                out.append(f'<text x="{x0 + bw + 6:.1f}" y="{yy + 13}">{v:.2f} '
                           f'(×{v / ep:.2f})</text>')
                yy += bar_h
        y += len(keys) * bar_h + gap - 10
    out.append("</svg>")
    return "\n".join(out) + "\n"


def generated(res, svg_name):
    m = res["machine"]
    v = m["versions"]
    quick = " (`--quick`: smaller images, fewer runs)" if res.get("quick") else ""
    la0, la1 = res.get("load_before", [0, 0, 0]), res.get("load_after", [0, 0, 0])
    runs = next(iter(res.get("peers", {}).values()), {}).get("median", {})
    n = next(iter(runs.values()), {}).get("n", "?") if isinstance(runs, dict) and runs else "?"
    lines = [
        BEGIN,
        "",
        f"### Run of {res['started']}{quick}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, "
        f"kernel {m['kernel']}; destination file system: `{m['dest_fs']}`.",
        f"- Load average (1/5/15 min) before: {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, "
        f"after: {la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}.",
        f"- Peers: {v['skopeo']}; {v['containerd']}; oras-py {v.get('oras', '?')}; {v['curl']}; server side "
        f"{v['docker-registry']}, {v['nginx']}; {v['openssl']}; {v['qemu']}; {v['rustc']}.",
        f"- Medians of {n} runs per contender after one warm-up round, contenders alternating.",
        "",
        f"![median wall time per pull]({svg_name})",
        "",
        peers_table(res),
        "",
        "Targets:",
        "",
        targets_table(res),
        "",
    ]
    if res.get("openssl"):
        lines += ["CPU floor:", "", openssl_table(res), ""]
    if idle_runs(res):
        i = idle_runs(res)[0]
        lines += [f"Idle daemon (`edgepull run`, images `small` and `big` synced, interval 1 day), "
                  f"over {i['seconds']} s after the first sync:", "", idle_table(res), ""]
    if res.get("arm"):
        lines += ["ARM, instructions counted under qemu-user (guest instructions executed, "
                  "all threads; per byte = difference between a 64 MiB and a 10 MiB pull):", "",
                  arm_table(res), ""]
    if any(b.get("size") for b in res.get("builds", [])):
        lines += ["Binary sizes:", "", sizes_table(res), ""]
    if res.get("peers", {}).get("ciphers"):
        lines += ["TLS on the data endpoint (nginx's log): "
                  + ", ".join(f"`{c}`" for c in res["peers"]["ciphers"]) + ".", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


TEMPLATE_HEAD = """# Benchmarks

Produced by `scripts/bench` (the section between the markers below is rewritten by each
full run; the rest is by hand).

"""


def write_docs(res, md_path, svg_path):
    with open(svg_path, "w") as f:
        f.write(svg(res))
    svg_name = os.path.relpath(svg_path, os.path.dirname(md_path))
    body = generated(res, svg_name)
    text = TEMPLATE_HEAD + body
    if os.path.exists(md_path):
        with open(md_path) as f:
            old = f.read()
        if BEGIN in old and END in old:
            text = old[:old.index(BEGIN)] + body + old[old.index(END) + len(END) + 1:]
    with open(md_path, "w") as f:
        f.write(text)
