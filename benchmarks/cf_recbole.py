"""elbolab vs RecBole (MultiVAE, RecVAE) on the same MovieLens-100K interactions, in the same run (issue 3).

The positives of Liang et al.'s preprocessing (ratings > 3.5, users with >= 5)
are written as a RecBole atomic file; RecBole 1.2.1 trains its MultiVAE and
RecVAE on them (in its own venv, /work/venvs/recbole, as a subprocess), and
elbolab trains its presets on the same positives, both for the same number of
epochs at the same batch size and thread count. Reported: training seconds
per epoch of each and their ratio, and, since the two libraries' epochs
differ, the user rows each epoch pushes through the model (counted in RecBole
by wrapping its model's ``get_rating_matrix`` during training) and the ratio
of seconds per row. RecBole splits interactions its own way (80/10/10 per
user, not held-out users), so its ranking numbers are printed for context,
not compared.

    OMP_NUM_THREADS=1 python benchmarks/cf_recbole.py --epochs 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch

from elbolab.config import apply_overrides, load_preset
from elbolab.data.interactions import load_interactions
from elbolab.recommendation import RecommendationTask
from elbolab.runs import read_metrics
from elbolab.train import train

RECBOLE_PYTHON = Path("/work/venvs/recbole/bin/python")

RECBOLE_SCRIPT = textwrap.dedent('''
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed
    model_name, data_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    params = {
        "MultiVAE": {"mlp_hidden_size": [600], "latent_dimension": 200, "dropout_prob": 0.5,
                     "anneal_cap": 0.2, "total_anneal_steps": 2000, "learning_rate": 1e-3},
        "RecVAE": {"hidden_dimension": 600, "latent_dimension": 200, "dropout_prob": 0.5, "beta": 0.2,
                   "gamma": 0.005, "mixture_weights": [0.15, 0.75, 0.1], "n_enc_epochs": 3, "n_dec_epochs": 1,
                   "learning_rate": 5e-4},
    }[model_name]
    config = Config(model=model_name, dataset="cf100k", config_dict={
        "data_path": data_path, "load_col": {"inter": ["user_id", "item_id"]}, "epochs": epochs,
        "train_batch_size": 100, "eval_step": epochs, "stopping_step": epochs, "device": "cpu", "use_gpu": False,
        "metrics": ["Recall", "NDCG"], "topk": [20, 50, 100], "valid_metric": "NDCG@100",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "show_progress": False, "checkpoint_dir": data_path + "/saved", "seed": 0, **params})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    counted = {"rows": 0, "calls": 0}
    rating_matrix = model.get_rating_matrix
    def counting_rating_matrix(user):  # every training row the model sees passes through here
        counted["rows"] += int(user.shape[0])
        counted["calls"] += 1
        return rating_matrix(user)
    model.get_rating_matrix = counting_rating_matrix
    seconds = 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        seconds += time.perf_counter() - start
    model.get_rating_matrix = rating_matrix
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    users = train_data._dataset.inter_feat[config["USER_ID_FIELD"]]
    print(json.dumps({"seconds_per_epoch": seconds / epochs, "rows_per_epoch": counted["rows"] / epochs,
                      "updates_per_epoch": counted["calls"] / epochs, "train_interactions": len(users),
                      "train_users": int(users.unique().numel()), "test": {k: float(v) for k, v in result.items()}}))
''')


def write_positives(path: Path) -> Path:
    """Liang et al.'s positives of ML-100K as a RecBole .inter file (user_id, item_id)."""
    data = load_interactions("ml-100k")
    keep = data.rating > 3.5
    users, items = data.user[keep], data.item[keep]
    ids, counts = np.unique(users, return_counts=True)
    ok = np.isin(users, ids[counts >= 5])
    path.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in zip(users[ok], items[ok])]
    (path / "cf100k.inter").write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not RECBOLE_PYTHON.exists():
        print(f"RecBole venv {RECBOLE_PYTHON} not found: skipped (see CONTRIBUTING: /work/venvs/recbole)")
        return
    with tempfile.TemporaryDirectory(prefix="cf-recbole-") as tmp:
        write_positives(Path(tmp) / "cf100k")
        for ours, theirs in (("mult-vae-ml100k", "MultiVAE"), ("recvae-ml100k", "RecVAE")):
            proc = subprocess.run([str(RECBOLE_PYTHON), "-c", RECBOLE_SCRIPT, theirs, str(Path(tmp)), str(args.epochs),
                                   str(args.threads)], capture_output=True, text=True, cwd=tmp,  # its log dirs go there
                                  env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if proc.returncode != 0:
                print(json.dumps({"model": theirs, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            rb = json.loads(proc.stdout.strip().splitlines()[-1])
            config = apply_overrides(load_preset(ours), [f"train.epochs={args.epochs}"])
            run = train(config, Path(tmp) / ours, progress=False)
            mine = float(np.mean([m["train_seconds"] for m in read_metrics(run)]))
            task = RecommendationTask(config)
            my_rows = task.split.train.shape[0] * sum(phase.passes for phase in task.update_plan(task.build_model()))
            print(json.dumps({"model": theirs, "recbole_seconds_per_epoch": rb["seconds_per_epoch"],
                              "elbolab_seconds_per_epoch": mine, "ratio_recbole_over_elbolab": rb["seconds_per_epoch"] / mine,
                              "recbole_rows_per_epoch": rb["rows_per_epoch"], "recbole_updates_per_epoch": rb["updates_per_epoch"],
                              "recbole_train_interactions": rb["train_interactions"], "recbole_train_users": rb["train_users"],
                              "elbolab_rows_per_epoch": my_rows,
                              "per_row_ratio_recbole_over_elbolab": (rb["seconds_per_epoch"] / rb["rows_per_epoch"]) / (mine / my_rows),
                              "recbole_test": rb["test"], "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
