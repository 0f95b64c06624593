"""pythae's trainer on elbolab's MNIST networks: prints the seconds of each epoch as a JSON list.

Run by benchmarks/speed.py with pythae's own python (pythae is no dependency
of elbolab). Same networks (784-200-200-50 tanh, Bernoulli / BCE), batch,
Adam (lr 1e-3, eps 1e-4) and images as the elbolab side; the images are
binarized once (pythae has no dynamic binarization).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from pythae.data.datasets import BaseDataset
from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig


class Encoder(BaseEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200), torch.nn.Tanh())
        self.mu, self.log_var = torch.nn.Linear(200, 50), torch.nn.Linear(200, 50)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.net(x.reshape(x.shape[0], -1))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(50, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200),
                                       torch.nn.Tanh(), torch.nn.Linear(200, 784))

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", required=True, help="an .npz with x_train (grey images in [0, 1])")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grey = torch.from_numpy(np.load(args.data)["x_train"])
    x = torch.bernoulli(grey, generator=torch.Generator().manual_seed(0))
    if args.k == 1:
        model = VAE(VAEConfig(input_dim=(784,), latent_dim=50, reconstruction_loss="bce"), Encoder(), Decoder())
    else:
        config = IWAEConfig(input_dim=(784,), latent_dim=50, reconstruction_loss="bce", number_samples=args.k)
        model = IWAE(config, Encoder(), Decoder())
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=args.batch_size, num_epochs=args.epochs,
                                   learning_rate=1e-3, optimizer_params={"eps": 1e-4}, no_cuda=True, seed=0)
        trainer = BaseTrainer(model, BaseDataset(x, torch.zeros(len(x))), training_config=config)
        trainer.prepare_training()
        seconds = []
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            trainer.train_step(epoch)
            seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
