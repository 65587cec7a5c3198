"""Turn insn.c's blocks= output into a profile by function.

    python3 scripts/bench.d/blocks.py UNSTRIPPED_BINARY BLOCKS_FILE [TOP]

UNSTRIPPED_BINARY is the same build with symbols (e.g. built with
`--config profile.release.strip=false`; stripping changes no code address). Prints the
functions with the most guest instructions executed, with their share of the total.
"""

import bisect
import subprocess
import sys


def symbols(binary):
    out = subprocess.run(["nm", "-n", "-C", "--defined-only", binary], capture_output=True,
                         text=True, check=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        # ARM's mapping symbols ($a, $t, $d, $x: where ARM, Thumb, data or A64 code starts)
        # are not functions; counted as such they would hide the function they sit in.
        if len(parts) == 3 and parts[1] in "tTwW" and not parts[2].startswith("$"):
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def main():
    binary, blocks = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    addrs, names = symbols(binary)
    per = {}
    total = 0
    with open(blocks) as f:
        for line in f:
            a, n = line.split()
            a, n = int(a, 16), int(n)
            total += n
            i = bisect.bisect_right(addrs, a) - 1
            name = names[i] if i >= 0 else "?"
            per[name] = per.get(name, 0) + n
    print(f"{total:,} instructions")
    for name, n in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * n / total:6.2f}%  {n:>15,}  {name[:150]}")


if __name__ == "__main__":
    main()
