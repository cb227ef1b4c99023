"""Eval throughput: images/s through the feature networks, LPIPS pairs/s, the metric computations'
time, and FID-inception between two disjoint CIFAR-10 test subsets checked against an independent
computation.

    python -m bench.eval [--images 400] [--batch 100] [--device cpu] [--cifar-fid 1000] [--json bench/results/eval.json]

Feature networks run on random images at the default 32 px (the InceptionV3 paths resize
to 299 px first, as FID requires; the in-repo rebuild has random weights here, the packaged
TF port its real ones: speed does not depend on them). Metrics run on random float64
features of the networks' widths. ``--cifar-fid N``: N vs N CIFAR-10 test images (images
0..N/10-1 and N/10..2N/10-1 of each class, from $SRDD_CIFAR10_DIR/test.tar.gz; skipped when
it is not set) through `srdd fid`'s feature path, with the FID recomputed from the same features by
numpy/scipy directly. One thread per process (OMP_NUM_THREADS=1) unless --threads says otherwise.
"""
from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import scipy.linalg  # noqa: E402

from analysis.metrics import frechet_distance, inception_score, kernel_distance, precision_recall  # noqa: E402
from analysis.metrics.cnn import ClassifierCNN  # noqa: E402
from analysis.metrics.inception import FIDInceptionV3  # noqa: E402
from analysis.metrics.networks import fid_inception_net  # noqa: E402
from pretrain.outputs import atomic_write_json  # noqa: E402
from pretrain.tokenizer.lpips import load_lpips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR_ENV = "SRDD_CIFAR10_DIR"  # a directory in the cifar10:DIR layout (docs/data.md, "Sources")


def cifar_test_tarball() -> Path | None:
    """``$SRDD_CIFAR10_DIR/test.tar.gz`` when the variable is set and the file exists, else None."""
    directory = os.environ.get(CIFAR_ENV)
    path = Path(directory) / "test.tar.gz" if directory else None
    return path if path is not None and path.is_file() else None


CIFAR_TEST = cifar_test_tarball()


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


@torch.no_grad()
def lpips_pairs_per_s(net_name: str, pairs: int, batch: int, side: int) -> float:
    net = load_lpips(net_name)
    x, y = (torch.rand(batch, 3, side, side) * 2 - 1 for _ in range(2))
    net(x[:2], y[:2])  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < pairs:
        net(x, y)
        done += batch
    return done / (time.perf_counter() - t0)


def disjoint_class_subsets(src: Path, out_a: Path, out_b: Path, per_class: int) -> None:
    """Two disjoint class-folder tars from a ``<split>/<class>/NNNN.jpg`` tarball: images
    0..k-1 of each class into ``out_a``, k..2k-1 into ``out_b`` (read as one stream)."""
    with tarfile.open(src, "r|*") as stream, tarfile.open(out_a, "w") as ta, tarfile.open(out_b, "w") as tb:
        for info in stream:
            if info.isreg() and int(Path(info.name).stem) < 2 * per_class:
                (ta if int(Path(info.name).stem) < per_class else tb).addfile(info, stream.extractfile(info))


def independent_fid(a_ND: np.ndarray, b_ND: np.ndarray) -> float:
    """Heusel et al. 2017 eq. 6 written out with numpy/scipy alone (no project code)."""
    mu_a, mu_b = a_ND.mean(0), b_ND.mean(0)
    cov_a, cov_b = np.cov(a_ND, rowvar=False), np.cov(b_ND, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


def cifar_fid(n: int, batch: int) -> dict:
    """`srdd fid`'s feature path on N vs N disjoint CIFAR-10 test images, and the check against eq. 6."""
    from analysis.fid import spec_features
    from analysis.metrics import frechet_distance_from_stats

    net = fid_inception_net("bilinear")
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.tar", Path(tmp) / "b.tar"
        disjoint_class_subsets(CIFAR_TEST, a, b, per_class=n // 10)
        home = os.environ.get("SRDD_HOME")
        os.environ["SRDD_HOME"] = tmp  # a fresh feature cache: the images really go through the network
        t0 = time.perf_counter()
        refs = [spec_features(f"tar:{p}", 0, 0, net, batch) for p in (a, b)]
        extract_s = time.perf_counter() - t0
        os.environ.pop("SRDD_HOME") if home is None else os.environ.update(SRDD_HOME=home)
        t0 = time.perf_counter()
        fid = frechet_distance_from_stats(refs[0].stats, refs[1].stats)
        fid_s = time.perf_counter() - t0
        want = independent_fid(refs[0].feats_ND, refs[1].feats_ND)
    images = refs[0].stats.count + refs[1].stats.count
    return {"n_real": refs[0].stats.count, "n_fake": refs[1].stats.count, "fid": fid, "fid_independent": want,
            "rel_diff": abs(fid - want) / want, "images_per_s": images / extract_s, "fid_s": fid_s,
            "network_sha256": net.sha256, "metric": net.metric("FD")}


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
    parser.add_argument("--lpips-pairs", type=int, default=64, help="image pairs per LPIPS network and size")
    parser.add_argument("--cifar-fid", type=int, default=1000, help="N vs N CIFAR-10 test images for the FID check (0 = skip)")
    parser.add_argument("--json", default="bench/results/eval.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_inception = max(args.batch, args.images // 4)
    nets = [("mnist-cnn (platform CNN)", ClassifierCNN(10), args.images, 128),
            ("inception-v3 (FID pool3, 299 px)", FIDInceptionV3(), n_inception, 2048),
            ("inception (FID-inception, packaged TF port)", fid_inception_net("bilinear").module, n_inception, 2048)]
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
    print(f"{'network':<44} {'device':>6} {'batch':>5} {'img/s':>8} {'dim':>5} {'FD s':>6} {'P/R s':>6} {'KID s':>6}  (metrics on {args.samples} x dim)")
    for r in rows:
        print(f"{r['network']:<44} {r['device']:>6} {r['batch']:>5} {r['images_per_s']:>8} {r['feat_dim']:>5} "
              f"{r['fd_s']:>6} {r['pr_s']:>6} {r['kid_s']:>6}")
    lpips = [{"network": f"LPIPS-{name}", "side_px": side, "batch": min(args.batch, 16),
              "pairs_per_s": round(lpips_pairs_per_s(name, args.lpips_pairs, min(args.batch, 16), side), 1)}
             for name in ("alex", "vgg") for side in (args.side, 256)]
    print(f"\n{'LPIPS network':<14} {'side':>5} {'batch':>5} {'pairs/s':>9}")
    for r in lpips:
        print(f"{r['network']:<14} {r['side_px']:>5} {r['batch']:>5} {r['pairs_per_s']:>9}")
    fid = None
    if args.cifar_fid and CIFAR_TEST is None:
        print(f"\nCIFAR-10 FID check skipped: no ${CIFAR_ENV}/test.tar.gz")
    elif args.cifar_fid:
        fid = cifar_fid(args.cifar_fid, min(args.batch, 50))
        print(f"\n{fid['metric']} CIFAR-10 test {fid['n_real']} vs {fid['n_fake']} (disjoint): {fid['fid']:.4f}; "
              f"independent numpy/scipy: {fid['fid_independent']:.4f} (rel diff {fid['rel_diff']:.2e}); "
              f"{fid['images_per_s']:.2f} images/s, FID from features {fid['fid_s']:.1f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"rows": rows, "lpips": lpips, "cifar_fid": fid, "threads": torch.get_num_threads(),
                                  "cpu_count": os.cpu_count(), "torch": torch.__version__})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
