#!/usr/bin/env python3
"""Reads what ContinuityJob's sink emitted (DIR/out/sink-*.txt, one line per
record: "seq key count emit_ms subtask parallelism attempt") and says whether
the job kept processing:

  lost        sequence numbers never emitted although a later one of the same
              split was (must be 0); the newest few seconds are not judged,
              as records still in flight there may be emitted out of order
  replayed    records emitted more than once (a restart from a checkpoint
              replays what came after it; the sink is at-least-once on purpose)
  longest gap the longest time without any record emitted, and without a
              record emitted for the first time (replayed records are output,
              but not progress)
  parallelism the sink's parallelism over time, as the records carry it

The source is a number sequence cut into splits (one per source subtask at
the job's first start); each split is a run of consecutive numbers, so a hole
inside a run is a lost record, and the runs' starts are 10^17 or more apart.

  check_sink.py OUT_DIR [--from MS] [--to MS] [--json]
"""
import argparse
import glob
import json
import os
import sys

SPLIT_GAP = 10 ** 12   # a jump this large is the start of another split, not a loss
SETTLE_MS = 5000       # the newest records are still in flight


def read(out_dir):
    """[(emit_ms, seq, subtask, parallelism, attempt)], sorted by emit time."""
    recs = []
    for path in glob.glob(os.path.join(out_dir, "sink-*.txt")):
        with open(path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n")
        for line in data[:end + 1].split(b"\n"):
            p = line.split()
            if len(p) != 7:
                continue
            recs.append((int(p[3]), int(p[0]), int(p[4]), int(p[5]), int(p[6])))
    recs.sort()
    return recs


def replays(recs, lo, hi):
    """Emissions in [lo, hi) of a record emitted before (at any time)."""
    seen, n = set(), 0
    for t, seq, *_ in recs:
        if seq in seen:
            if lo <= t < hi:
                n += 1
        else:
            seen.add(seq)
    return n


def max_delay(recs, t_from, rate=2000):
    """The longest a record came out after it was due: a record's due time is
    its split's first record's plus (seq - split start) / per-split rate
    (records are due at fixed times from the submission on), counted for
    records first emitted from t_from on. Catches a stall of some keys only,
    which the gaps in output do not."""
    first = {}
    for t, seq, *_ in recs:
        if seq not in first:
            first[seq] = t
    runs = {}
    for seq in first:
        runs.setdefault(seq // SPLIT_GAP, []).append(seq)
    per_ms = rate / 1000.0 / max(1, len(runs))
    worst = 0
    for seqs in runs.values():
        start = min(seqs)
        epoch = min(first[q] - (q - start) / per_ms for q in seqs)
        for q in seqs:
            if first[q] >= t_from:
                worst = max(worst, first[q] - (epoch + (q - start) / per_ms))
    return int(worst)


def analyze(out_dir, t_from=None, t_to=None):
    recs = read(out_dir)
    if not recs:
        return {"records": 0}
    first = {}     # seq -> first emit time
    emitted = {}   # seq -> times emitted
    for t, seq, *_ in recs:
        if seq not in first:
            first[seq] = t
        emitted[seq] = emitted.get(seq, 0) + 1
    t_last = recs[-1][0]
    cutoff = t_last - SETTLE_MS

    # Lost: holes inside a split's run, judged where the later end was first
    # emitted before the cutoff.
    # A hole above what the latest attempt has emitted of that split is not
    # lost yet: a replay still under way will emit it.
    latest = {}
    for t, seq, _, _, att in recs:
        run = seq // SPLIT_GAP
        if att > latest.get(run, (-1, 0))[0]:
            latest[run] = (att, seq)
        elif att == latest[run][0] and seq > latest[run][1]:
            latest[run] = (att, seq)
    seqs = sorted(first)
    lost = pending = 0
    holes = []
    for a, b in zip(seqs, seqs[1:]):
        d = b - a
        if 1 < d < SPLIT_GAP and first[b] < cutoff:
            frontier = latest.get(b // SPLIT_GAP, (0, b))[1]
            if b > frontier:
                pending += d - 1
                continue
            lost += d - 1
            if len(holes) < 10:
                holes.append((a, b, first[b]))

    lo = t_from if t_from is not None else recs[0][0]
    hi = t_to if t_to is not None else t_last

    def longest(ts):
        ts = [t for t in ts if lo <= t <= hi]
        best = (0, None)
        for x, y in zip(ts, ts[1:]):
            if y - x > best[0]:
                best = (y - x, x)
        return best

    gap_any = longest([r[0] for r in recs])
    gap_new = longest(sorted(first.values()))

    replayed = sum(n - 1 for n in emitted.values())
    in_window = [r for r in recs if lo <= r[0] <= hi]
    replayed_window = len(in_window) - len({r[1] for r in in_window})

    # Parallelism over time: the value records carry, in emission order.
    timeline = []
    last = None
    for t, _, _, par, _ in recs:
        if par != last:
            timeline.append((t, par))
            last = par
    # (several subtasks of two attempts may interleave for a moment: keep the
    # changes that held for at least 1 s)
    steady = []
    for i, (t, par) in enumerate(timeline):
        nxt = timeline[i + 1][0] if i + 1 < len(timeline) else t_last
        if nxt - t >= 1000 and (not steady or steady[-1][1] != par):
            steady.append((t, par))

    return {
        "records": len(recs),
        "unique": len(first),
        "first_ms": recs[0][0],
        "last_ms": t_last,
        "lost": lost,
        "lost_holes": holes,
        "not_yet_replayed": pending,
        "replayed": replayed,
        "replayed_in_window": replayed_window,
        "longest_gap_ms": gap_any[0],
        "longest_gap_at_ms": gap_any[1],
        "longest_gap_new_ms": gap_new[0],
        "longest_gap_new_at_ms": gap_new[1],
        "parallelism": steady,
        "max_delay_ms": max_delay(recs, lo),
        "_recs": recs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--from", dest="t_from", type=int)
    ap.add_argument("--to", dest="t_to", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = analyze(a.out_dir, a.t_from, a.t_to)
    r.pop("_recs", None)
    if a.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    elif not r["records"]:
        print("no records")
    else:
        t0 = r["first_ms"]
        print(f"records {r['records']} ({r['unique']} distinct) over {(r['last_ms'] - t0) / 1000:.1f} s")
        print(f"lost {r['lost']}" + (f" (holes {r['lost_holes']})" if r["lost"] else ""))
        print(f"longest delay of a record after it was due {r['max_delay_ms'] / 1000:.2f} s")
        print(f"replayed {r['replayed']}; not yet replayed (above the latest attempt's frontier) {r['not_yet_replayed']}")
        print(f"longest gap {r['longest_gap_ms'] / 1000:.2f} s at +{((r['longest_gap_at_ms'] or t0) - t0) / 1000:.1f} s;"
              f" without new records {r['longest_gap_new_ms'] / 1000:.2f} s at"
              f" +{((r['longest_gap_new_at_ms'] or t0) - t0) / 1000:.1f} s")
        print("parallelism " + ", ".join(f"+{(t - t0) / 1000:.1f}s {p}" for t, p in r["parallelism"]))
    return 1 if r.get("lost") else 0


if __name__ == "__main__":
    sys.exit(main())
