#!/usr/bin/env python3
"""Per-call instruction counts by function from a dump of `scripts/callgrind-calls.sh`, which this
machine's `callgrind_annotate` (3.19) puts all under `clone`. Exclusive counts, most first:

    python3 scripts/callgrind-top.py /tmp/callgrind-calls/LABEL/cg.*.out.1 CALLS [TOP]

With `--callers REGEX`: what each caller spends in the functions whose name matches, inclusive
(who calls `memcpy`, `HeaderMap<T>::find$`, ...).
"""
import collections, re, sys


def read(path):
    """Exclusive cost by function, and inclusive cost by (caller, callee)."""
    excl, pairs, names = collections.Counter(), collections.Counter(), {}
    fn = cfn = None
    after_call = False

    def name(v):
        m = re.match(r"\((\d+)\)(?: (.*))?", v)
        if not m:
            return v
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = name(line[3:])
        elif line.startswith("cfn="):
            cfn = name(line[4:])
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            if after_call:
                pairs[(fn, cfn)] += int(parts[1])
                after_call = False
            else:
                excl[fn] += int(parts[1])
    return excl, pairs


def main():
    args = sys.argv[1:]
    callers = None
    if "--callers" in args:
        i = args.index("--callers")
        callers = args[i + 1]
        del args[i : i + 2]
    path, calls = args[0], int(args[1])
    top = int(args[2]) if len(args) > 2 else 40
    excl, pairs = read(path)
    total = sum(excl.values())
    print(f"per call: {total // calls}")
    if callers:
        for (f, c), v in pairs.most_common():
            if re.search(callers, c or ""):
                print(f"{v / calls:8.0f}  {f[:110]}  ->  {c[:60]}")
        return
    for f, c in excl.most_common(top):
        print(f"{c / calls:8.0f} {100 * c / total:5.1f}%  {f[:150]}")


if __name__ == "__main__":
    main()
