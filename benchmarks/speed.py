"""Speed: MNIST VAE / IWAE training throughput against this machine's matmul
peak, and against pythae's trainer on the same networks, batch and data.

    python benchmarks/speed.py                 # elbolab only
    python benchmarks/speed.py --pythae        # side by side with pythae (pip install pythae)

Throughput is measured on real epochs of elbolab.train (60k dynamically
binarized MNIST images, batch 100, fused Adam), the first epoch discarded as
warm-up. FLOPs count 2 per multiply-add in every Linear layer (encoder once
per image, decoder once per sample) and a backward pass costing twice the
forward one; the fraction is that rate over the best of several 2048 x 2048
float32 matmuls on the same threads.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import elbolab
from elbolab.data import binarize, load_mnist
from elbolab.runs import read_metrics

KS = (1, 5, 50)


def peak_matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The best float32 matmul rate of this machine at this thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def linear_flops(module: torch.nn.Module) -> int:
    """Forward FLOPs of every Linear layer in ``module`` for one input row."""
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def training_flops_per_image(model: torch.nn.Module, k: int) -> int:
    """Forward + backward (= 3 x forward) FLOPs of one image with k importance samples."""
    return 3 * (linear_flops(model.encoder) + k * linear_flops(model.decoder))


def elbolab_epochs(k: int, batch_size: int, epochs: int) -> tuple[list[float], torch.nn.Module]:
    """Seconds of each measured training epoch (the first discarded), and the model."""
    preset = "vae-mnist" if k == 1 else "iwae-mnist-k5"
    overrides = [f"train.epochs={epochs + 1}", f"train.batch_size={batch_size}", "train.eval_subset=0",
                 f"bound.k={k}", "train.lr_schedule='constant'"]
    config = elbolab.apply_overrides(elbolab.load_preset(preset), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = elbolab.train(config, Path(tmp) / "run", progress=False)
        seconds = [m["train_seconds"] for m in read_metrics(run)[1:]]
        model = elbolab.load(run)
    return seconds, model


def pythae_epochs(k: int, batch_size: int, epochs: int, x: np.ndarray) -> list[float]:
    """Seconds of each measured epoch of pythae's BaseTrainer on the same networks (first discarded)."""
    from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.data.datasets import BaseDataset

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200), torch.nn.Tanh())
            self.mu, self.log_var = torch.nn.Linear(200, 50), torch.nn.Linear(200, 50)

        def forward(self, x):
            h = self.net(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(50, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200),
                                           torch.nn.Tanh(), torch.nn.Linear(200, 784))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    if k == 1:
        model = VAE(VAEConfig(input_dim=(784,), latent_dim=50, reconstruction_loss="bce"), Encoder(), Decoder())
    else:
        model = IWAE(IWAEConfig(input_dim=(784,), latent_dim=50, reconstruction_loss="bce", number_samples=k),
                     Encoder(), Decoder())
    data = torch.from_numpy(x)
    dataset = BaseDataset(data, torch.zeros(len(data)))
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=batch_size, num_epochs=epochs + 1,
                                   learning_rate=1e-3, optimizer_params={"eps": 1e-4}, no_cuda=True, seed=0)
        trainer = BaseTrainer(model, dataset, training_config=config)
        trainer.prepare_training()
        seconds = []
        for epoch in range(1, epochs + 2):
            start = time.perf_counter()
            trainer.train_step(epoch)
            seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per setting (after one warm-up)")
    parser.add_argument("--pythae", action="store_true", help="measure pythae's trainer side by side")
    args = parser.parse_args()

    peak = peak_matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul peak {peak:.1f} GFLOP/s\n")
    x = None
    if args.pythae:  # one fixed binarization for pythae, which has no dynamic binarization
        arrays = load_mnist()
        grey = torch.from_numpy(np.concatenate([arrays["x_train"], arrays["x_valid"]]))
        x = binarize(grey, "dynamic", torch.Generator().manual_seed(0)).numpy()

    rows = []
    for k in KS:
        ours, model = elbolab_epochs(k, args.batch_size, args.epochs)
        theirs = pythae_epochs(k, args.batch_size, args.epochs, x) if args.pythae else []
        ours_s = statistics.median(ours)
        flops = training_flops_per_image(model, k)
        rate = 60_000 / ours_s
        rows.append((k, ours_s, rate, rate * flops / 1e9, statistics.median(theirs) if theirs else None))

    header = "| k | elbolab s/epoch | images/s | model GFLOP/s | % of matmul peak |"
    header += " pythae s/epoch | speed-up |" if args.pythae else ""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for k, ours_s, rate, gflops, theirs_s in rows:
        line = f"| {k} | {ours_s:.2f} | {rate:,.0f} | {gflops:.1f} | {100 * gflops / peak:.0f}% |"
        if args.pythae:
            line += f" {theirs_s:.2f} | {theirs_s / ours_s:.1f}x |"
        print(line)


if __name__ == "__main__":
    main()
