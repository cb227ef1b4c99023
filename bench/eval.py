"""Eval throughput: images/s through the feature networks, and the metric computations' time.

    python -m bench.eval [--images 400] [--batch 100] [--device cpu] [--json bench/results/eval.json]

Feature networks run on random images at the default 32 px (the InceptionV3 path resizes
to 299 px first, as FID requires; its weights are random here: speed does not depend on
them). Metrics run on random float64 features of the networks' widths. One thread per
process (OMP_NUM_THREADS=1) unless --threads says otherwise.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis.metrics import frechet_distance, inception_score, kernel_distance, precision_recall  # noqa: E402
from analysis.metrics.cnn import ClassifierCNN  # noqa: E402
from analysis.metrics.inception import FIDInceptionV3  # noqa: E402
from pretrain.outputs import atomic_write_json  # noqa: E402


@torch.no_grad()
def images_per_s(net: torch.nn.Module, n: int, batch: int, side: int, device: str) -> float:
    net = net.eval().to(device)
    img = torch.rand(batch, 3, side, side, device=device) * 2 - 1
    net.features(img[:2])  # warm-up (allocations, kernel selection)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        net.features(img)
        done += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def seconds(fn, *a, **kw) -> float:
    t0 = time.perf_counter()
    fn(*a, **kw)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="images per network (the Inception row uses a quarter)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1000, help="feature rows per set for the metric timings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="bench/results/eval.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = [("mnist-cnn (platform CNN)", ClassifierCNN(10), args.images, 128),
            ("inception-v3 (FID pool3, 299 px)", FIDInceptionV3(), max(args.batch, args.images // 4), 2048)]
    rows = []
    for name, net, n, dim in nets:
        ips = images_per_s(net, n, args.batch, args.side, args.device)
        rng = np.random.default_rng(0)
        real, fake = rng.standard_normal((args.samples, dim)), rng.standard_normal((args.samples, dim)) + 0.1
        probs = np.full((args.samples, 10), 0.1)
        rows.append({"network": name, "device": args.device, "batch": args.batch, "images": n, "images_per_s": round(ips, 1),
                     "feat_dim": dim, "fd_s": round(seconds(frechet_distance, real, fake), 3),
                     "pr_s": round(seconds(precision_recall, real, fake, k=3), 3),
                     "kid_s": round(seconds(kernel_distance, real, fake, subsets=100, subset_size=1000), 3),
                     "is_s": round(seconds(inception_score, probs), 4)})
    print(f"{'network':<34} {'device':>6} {'batch':>5} {'img/s':>8} {'dim':>5} {'FD s':>6} {'P/R s':>6} {'KID s':>6}  (metrics on {args.samples} x dim)")
    for r in rows:
        print(f"{r['network']:<34} {r['device']:>6} {r['batch']:>5} {r['images_per_s']:>8} {r['feat_dim']:>5} "
              f"{r['fd_s']:>6} {r['pr_s']:>6} {r['kid_s']:>6}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"rows": rows, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                                  "torch": torch.__version__})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
