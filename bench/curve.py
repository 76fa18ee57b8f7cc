"""`smallvision curve` on dogs vs cats: is the extrapolation right, and how long does it take?

* fit on the sizes <= 50 images per class only (the user who has labelled ~100 photos and asks
  whether 2,000 would pay), predict 1,000 per class, and compare with the measured accuracy at
  1,000 (every training image): three independent sets of draws (seeds 0, 5, 10: 5 draws each);
* the wall time of the default curve (8 sizes x 5 draws) with a warm feature cache, three times.

    SMALLVISION_CACHE=<a warm cache> python bench/curve.py
"""
import os
import sys
import tempfile
import time

from _common import DATA, machine, median, need_data, record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def main():
    need_data()
    from smallvision.curve import curve
    out = tempfile.mkdtemp(prefix="curve-")
    draws = []
    for seed in (0, 5, 10):
        r = curve(str(DATA), out=out, fit_up_to=50, predict=[1000], seed=seed, progress=False)
        q, measured = r.predictions[0], r.points[-1].mean
        draws.append({"seed": seed, "fitted_sizes": [p.size for p in r.points if p.size <= 50],
                      "measured_by_size": {p.size: round(100 * p.mean, 2) for p in r.points},
                      "predicted_1000": round(100 * q.accuracy, 2), "interval": [round(100 * q.low, 2),
                                                                                 round(100 * q.high, 2)],
                      "measured_1000": round(100 * measured, 2),
                      "error_points": round(100 * abs(q.accuracy - measured), 2),
                      "inside": bool(q.low <= measured <= q.high)})
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        r = curve(str(DATA), out=out, progress=False)
        walls.append(time.perf_counter() - t)
    record("curve", {"machine": machine(), "extrapolation": draws,
                     "default_curve": {"sizes": [p.size for p in r.points], "draws": len(r.points[0].accuracies),
                                       "wall_s": [round(w, 2) for w in walls], "median_wall_s": median(walls),
                                       "predictions": [{"size": q.size, "accuracy": round(100 * q.accuracy, 2),
                                                        "interval": [round(100 * q.low, 2), round(100 * q.high, 2)]}
                                                       for q in r.predictions]}})


if __name__ == "__main__":
    main()
