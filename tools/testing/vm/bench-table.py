#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""make bench's table: ratios of module sets measured in alternating boots.

Reads lines "ROUND SET NAME VALUE" (bench.sh's results) and prints the
median of each measurement per set, then for each goal of the benchmark the
median of the per-round ratios (both sets measured in the same round, so
slow and fast phases of the host cancel) with their range, and whether the
goal holds. Exits 0 unless no ratio could be formed.
"""

import statistics
import sys
from collections import defaultdict

# (what, measurement, set, reference set, goal: ("<=" | ">=", bound))
GOALS = [
    ("ESP-in-TCP ping RTT, ours / upstream", "tcp{}_rtt", "ours", "upstream", ("<=", 0.90)),
    ("ESP-in-TCP bulk, ours / upstream", "tcp{}_bulk", "ours", "upstream", (">=", 1.30)),
    ("ESP-in-TCP 64-byte packets/s, ours / upstream", "tcp{}_pps", "ours", "upstream", (">=", 1.30)),
    ("IKE round trips/s, ours / upstream", "ike{}_rr", "ours", "upstream", (">=", 1.00)),
    ("ESP-in-TCP bulk, ours / our ESP-in-UDP", ("tcp{}_bulk", "udp{}_bulk"), "ours", "ours", (">=", 1.00)),
    ("plain ESP bulk, ours / stock", "plain{}_bulk", "ours", "stock", (">=", 1.00)),
    ("plain ESP packets/s, ours / stock", "plain{}_pps", "ours", "stock", (">=", 1.00)),
    ("plain ESP ping RTT, ours / stock", "plain{}_rtt", "ours", "stock", None),
    ("ESP-in-UDP bulk, ours / stock", "udp{}_bulk", "ours", "stock", (">=", 1.00)),
    ("ESP-in-UDP packets/s, ours / stock", "udp{}_pps", "ours", "stock", (">=", 1.00)),
    ("ESP-in-UDP ping RTT, ours / stock", "udp{}_rtt", "ours", "stock", None),
    ("plain ESP 4 flows over 4 SAs / 1 flow, ours", ("plain{}_flows4", "plain{}_flows1"), "ours", "ours", None),
    ("plain ESP 4 flows over 4 SAs / 1 flow, stock", ("plain{}_flows4", "plain{}_flows1"), "stock", "stock", None),
    ("plain ESP 4 flows over 4 SAs, ours / stock", "plain{}_flows4", "ours", "stock", (">=", 1.00)),
    ("ESP-in-TCP 4 flows over 4 conns / 1, ours", ("tcp{}_flows4", "tcp{}_flows1"), "ours", "ours", None),
    ("ESP-in-TCP 4 flows over 4 conns / 1, upstream", ("tcp{}_flows4", "tcp{}_flows1"), "upstream", "upstream", None),
    ("ESP-in-TCP 4 flows over 4 conns, ours / upstream", "tcp{}_flows4", "ours", "upstream", (">=", 1.00)),
]

# Before and after a change (ESPINTCP_BENCH_BASE): every measurement.
BASE = [
    ("ESP-in-TCP ping RTT, ours / base", "tcp{}_rtt"),
    ("ESP-in-TCP bulk, ours / base", "tcp{}_bulk"),
    ("ESP-in-TCP 64-byte packets/s, ours / base", "tcp{}_pps"),
    ("IKE round trips/s, ours / base", "ike{}_rr"),
    ("ESP-in-UDP bulk, ours / base", "udp{}_bulk"),
    ("ESP-in-UDP packets/s, ours / base", "udp{}_pps"),
    ("plain ESP bulk, ours / base", "plain{}_bulk"),
    ("plain ESP packets/s, ours / base", "plain{}_pps"),
    ("plain ESP 4 flows over 4 SAs, ours / base", "plain{}_flows4"),
    ("ESP-in-TCP 4 flows over 4 conns, ours / base", "tcp{}_flows4"),
]


def main():
    """Print the tables for the results file named on the command line."""
    runs = defaultdict(dict)        # (round, set) -> {name: value}
    for line in open(sys.argv[1], encoding="ascii"):
        rnd, kind, name, value = line.split()
        runs[(rnd, kind)][name] = float(value)
    rounds = sorted({r for r, _ in runs}, key=int)
    kinds = sorted({k for _, k in runs})

    print("Medians over %d rounds (ms for rtt, bit/s for bulk, packets/s "
          "for pps, round trips/s for rr):" % len(rounds))
    names = sorted({n for v in runs.values() for n in v})
    print("%-14s" % "" + "".join("%16s" % k for k in kinds))
    for name in names:
        row = "%-14s" % name
        for kind in kinds:
            vals = [runs[(r, kind)][name] for r in rounds
                    if name in runs.get((r, kind), {})]
            row += "%16s" % ("%.4g" % statistics.median(vals) if vals else "-")
        print(row)

    print()
    print("%-48s %-4s %6s %13s  %-7s %s" %
          ("ratio (median of rounds)", "IP", "ratio", "range", "goal", ""))
    formed = held = goals = 0
    rows = list(GOALS)
    if any(k == "base" for _, k in runs):
        rows += [(what, meas, "ours", "base", None) for what, meas in BASE]
    for what, meas, kind, ref, goal in rows:
        for fam in (4, 6):
            if isinstance(meas, tuple):
                num, den = meas[0].format(fam), meas[1].format(fam)
            else:
                num = den = meas.format(fam)
            ratios = []
            for r in rounds:
                a = runs.get((r, kind), {}).get(num)
                b = runs.get((r, ref), {}).get(den)
                if a is not None and b:
                    ratios.append(a / b)
            goal_s = "%s %.2f" % goal if goal else "-"
            if not ratios:
                print("%-48s v%-3d %6s %13s  %-7s not measured" %
                      (what, fam, "-", "-", goal_s))
                continue
            formed += 1
            med = statistics.median(ratios)
            rng = "%.2f-%.2f" % (min(ratios), max(ratios))
            verdict = ""
            if goal:
                goals += 1
                ok = med <= goal[1] if goal[0] == "<=" else med >= goal[1]
                held += ok
                verdict = "holds" if ok else "MISSED"
            print("%-48s v%-3d %6.2f %13s  %-7s %s" %
                  (what, fam, med, rng, goal_s, verdict))
    print()
    print("bench: %d of %d goals hold (%d rounds)" % (held, goals, len(rounds)))
    return 0 if formed else 1


if __name__ == "__main__":
    sys.exit(main())
