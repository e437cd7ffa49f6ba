"""`reid eval track` against py-motmetrics (PyPI motmetrics==1.4.0) on the same synthetic input.

Random scenes: people walk, enter and leave; a simulated tracker follows them with jittered boxes,
drops detections, swaps and restarts tracks and adds false boxes. Both tools score each scene and
every figure must agree.

    .venv/bin/python tests/python/motmetrics_check.py target/debug/reid [SCENES]
"""

import json
import pathlib
import random
import subprocess
import sys
import tempfile

import numpy as np

# motmetrics 1.4.0 (the newest release) still calls np.asfarray, which NumPy 2 removed.
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)

import motmetrics as mm  # noqa: E402


def scene(rng):
    people = rng.randint(2, 8)
    frames = rng.randint(20, 60)
    gt, pred = [], []
    next_track = 1
    tracks = {}
    for p in range(1, people + 1):
        start = rng.randint(1, frames // 2)
        end = rng.randint(start + 5, frames)
        x, y = rng.uniform(0, 600), rng.uniform(0, 400)
        w, h = rng.uniform(20, 60), rng.uniform(60, 160)
        vx, vy = rng.uniform(-6, 6), rng.uniform(-3, 3)
        tracks[p] = next_track
        next_track += 1
        for f in range(start, end + 1):
            x, y = x + vx, y + vy
            gt.append((f, p, x, y, w, h))
            r = rng.random()
            if r < 0.12:
                continue  # missed
            if r < 0.16:
                tracks[p] = next_track  # the tracker restarts this person's track
                next_track += 1
            j = rng.uniform(0.0, 0.3) if rng.random() < 0.85 else rng.uniform(0.3, 0.8)
            pred.append((f, tracks[p], x + j * w * rng.choice([-1, 1]), y + rng.uniform(-0.1, 0.1) * h,
                         w * rng.uniform(0.85, 1.15), h * rng.uniform(0.85, 1.15)))
        # Now and then two people's tracks are exchanged from some frame on.
    if people >= 2 and rng.random() < 0.5:
        a, b = rng.sample(range(1, people + 1), 2)
        swap_from = rng.randint(1, frames)
        ta, tb = tracks[a], tracks[b]
        pred = [(f, (tb if t == ta else ta if t == tb else t) if f >= swap_from else t, *rest)
                for (f, t, *rest) in pred]
    for _ in range(rng.randint(0, 3 * frames // 4)):
        pred.append((rng.randint(1, frames), next_track + rng.randint(0, 5), rng.uniform(0, 700),
                     rng.uniform(0, 500), rng.uniform(20, 60), rng.uniform(60, 160)))
    # One track id per frame at most, as trackers give.
    seen, unique = set(), []
    for row in pred:
        if (row[0], row[1]) not in seen:
            seen.add((row[0], row[1]))
            unique.append(row)
    return gt, unique


def write(path, rows):
    rows = sorted(rows)
    path.write_text("".join(f"{f},{i},{x:.3f},{y:.3f},{w:.3f},{h:.3f},1,-1,-1,-1\n" for f, i, x, y, w, h in rows))


# motmetrics counts a match that switches id as a SWITCH, not a MATCH.
METRICS = ["num_frames", "num_matches", "num_switches", "num_false_positives", "num_misses",
           "num_fragmentations", "mota", "motp", "idf1", "idp", "idr", "mostly_tracked",
           "partially_tracked", "mostly_lost", "num_unique_objects", "precision", "recall"]


def main():
    reid = sys.argv[1]
    scenes = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    rng = random.Random(20261202)
    mh = mm.metrics.create()
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for n in range(scenes):
            gt_rows, pred_rows = scene(rng)
            gt, pred = tmp / "gt.txt", tmp / "pred.txt"
            write(gt, gt_rows)
            write(pred, pred_rows)
            acc = mm.utils.compare_to_groundtruth(
                mm.io.loadtxt(str(gt), fmt="mot15-2D"), mm.io.loadtxt(str(pred), fmt="mot15-2D"), "iou", distth=0.5)
            theirs = mh.compute(acc, metrics=METRICS, name="s").iloc[0].to_dict()
            out = subprocess.run([reid, "eval", "track", "--gt", str(gt), "--pred", str(pred), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            t = json.loads(out)["tracking"]
            ours = {
                "num_frames": t["frames"], "num_matches": t["matches"] - t["id_switches"], "num_switches": t["id_switches"],
                "num_false_positives": t["false_positives"], "num_misses": t["misses"],
                "num_fragmentations": t["fragmentations"], "mota": t["mota"], "motp": 1.0 - t["motp"],
                "idf1": t["idf1"], "idp": t["idp"], "idr": t["idr"], "mostly_tracked": t["mostly_tracked"],
                "partially_tracked": t["partly_tracked"], "mostly_lost": t["mostly_lost"],
                "num_unique_objects": t["gt_ids"], "precision": t["precision"], "recall": t["recall"],
            }
            for k in METRICS:
                a, b = float(ours[k]), float(theirs[k])
                if abs(a - b) > 1e-6:
                    print(f"scene {n}: {k}: reid {a} motmetrics {b}", file=sys.stderr)
                    (tmp / "gt.txt").rename(f"/tmp/motmetrics-gt-{n}.txt")
                    (tmp / "pred.txt").rename(f"/tmp/motmetrics-pred-{n}.txt")
                    print(f"inputs kept in /tmp/motmetrics-{{gt,pred}}-{n}.txt", file=sys.stderr)
                    sys.exit(1)
                compared += 1
    print(f"motmetrics check: {scenes} scenes, {compared} figures, all equal to py-motmetrics 1.4.0")


if __name__ == "__main__":
    main()
