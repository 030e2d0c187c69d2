"""The Fashion-FID a perfect generator would get: real training images against the test split.

Takes N class-balanced Fashion-MNIST *training* images (the first N/10 of each class; needs the
IDX files from `apt-get install dataset-fashion-mnist` or BIGAIN_FASHION_MNIST_DIR) and reports
their Fashion-FID against the 10k test split and their `fashion-cnn` accuracy, the floor and the
ceiling for the sample rows of the sweep (which use N = 2,000 samples).

    python benchmarks/fashion_fid_floor.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bigain.data import load as load_data
from bigain.metrics import classifier_accuracy
from bigain.metrics.fashion import CNNFeatureExtractor
from bigain.metrics.fid import FeatureStats, fid_from_features
from bigain.models import load_classifier

OUT = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    a = p.parse_args()
    cnn = load_classifier("builtin:fashion-cnn")
    test = load_data("builtin:fashion-mnist", split="test")
    test_imgs = torch.stack([test[i][0] for i in range(len(test))])
    ref = FeatureStats.from_features(CNNFeatureExtractor(cnn)(test_imgs).numpy())
    train = load_data("builtin:fashion-mnist", split="train")
    per, seen, picked = a.n // 10, {}, []
    for i in range(len(train)):
        y = int(train[i][1])
        if seen.get(y, 0) < per:
            seen[y] = seen.get(y, 0) + 1
            picked.append(i)
        if len(picked) == a.n:
            break
    imgs = torch.stack([train[i][0] for i in picked])
    labels = torch.tensor([int(train[i][1]) for i in picked])
    fid = float(fid_from_features(FeatureStats.from_features(CNNFeatureExtractor(cnn)(imgs).numpy()), ref))
    acc = float(classifier_accuracy(imgs, labels, cnn))
    res = {"n": len(picked), "fashion_fid_train_vs_test": fid, "cnn_accuracy_train": acc}
    OUT.mkdir(exist_ok=True)
    (OUT / "fashion_fid_floor.json").write_text(json.dumps(res, indent=2))
    (OUT / "fashion_fid_floor.md").write_text(
        "# Fashion-FID floor\n\n"
        f"{len(picked)} class-balanced real Fashion-MNIST training images vs the 10k test split: "
        f"Fashion-FID **{fid:.3f}**, `fashion-cnn` accuracy **{100 * acc:.2f}%**. "
        "A generator's samples at the same count cannot be expected to score below this FID.\n"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
