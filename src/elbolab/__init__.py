"""elbolab: the VAE family and its evidence lower bounds.

Every model is three conditional distributions, q(z | x, c), p(z | c) and
p(x | z, c); every objective is a function of the log-weights
log w = log p(x | z, c) + log p(z | c) - log q(z | x, c), z ~ q.

Glossary (names used throughout the code):
    x           data, [B, *data_shape]
    x_in        what the encoder sees (a corrupted copy of x for denoising bounds)
    z           latent, [k, B, latent_dim]
    c           condition (a label, the observed part, a mask); None when unconditioned
    mask        1 = observed
    k           importance samples per example
    log_w       log-weights, [k, B]
    latent_dim  size of z
    beta        weight on KL(q || p)

Public API:
    load(run_dir)                    the trained model of a run directory
    train(config, out)               train a config into a run directory
    evaluate(run_dir)                dissect its bound on the test set (eval.json)
    elbo, iwae, importance_sample    the bounds, returning BoundTerms
    MODELS, build_model              the family, by name
    load_preset, apply_overrides     configs
    write_report(runs, out)          the ELBO analysis report (HTML) of run directories
    sweep(config, grid, out)         train, evaluate and report a grid of runs
    gsnn, hybrid_cvae_gsnn           the GSNN and hybrid objectives of the CVAE (Sohn et al. 2015)
    sample_completions, completion_grid   quadrant completions drawn from the prior network
    VAEACImputer                     scikit-learn-style imputer (VAEAC, issue 5)
    inference_gaps, analyze_gaps     approximation and amortization gaps (Cremer et al. 2018)
    reuse_freed_memory()             keep freed CPU memory for reuse (what the elbolab command does)
    flush_denormals()                subnormal floats flushed to zero (done on import; floats.py)
"""
from __future__ import annotations

__version__ = "0.1.0"

from .floats import flush_denormals

# Subnormal floats flushed to zero before torch starts its CPU thread pool: each worker thread inherits the
# mode only when it is created, so later calls reach the main thread alone (floats.py).
flush_denormals()

from .bounds import BoundTerms, bound_curve, elbo, importance_sample, iwae
from .config import Config, apply_overrides, load_preset, preset_names
from .errors import ElbolabError
from .evaluate import active_units, dissect, evaluate
from .gaps import InferenceGaps, LocalOptimization, analyze_gaps, inference_gaps  # inference gaps (issue 8)
from .models import MODELS, LatentVariableModel, build_model
from .runs import load
from .train import train
from .imputer import VAEACImputer  # imputation (issue 5)
from .memory import reuse_freed_memory  # CPU speed (issue 3)

# the ELBO analysis report and sweeps (issue 6)
from .report import write_report
from .sweep import sweep
# conditional VAE (issue 4)
from .bounds import gsnn, hybrid_cvae_gsnn  # noqa: E402
from .completions import completion_grid, sample_completions  # noqa: E402
from .quadrants import merge_quadrants, split_quadrants  # noqa: E402
from .recommendation import Recommender  # collaborative filtering (issue 3)

__all__ = [
    "BoundTerms",
    "Config",
    "ElbolabError",
    "LatentVariableModel",
    "MODELS",
    "active_units",
    "apply_overrides",
    "bound_curve",
    "build_model",
    "dissect",
    "elbo",
    "evaluate",
    "importance_sample",
    "iwae",
    "load",
    "load_preset",
    "preset_names",
    "train",
    # the ELBO analysis report and sweeps (issue 6)
    "sweep",
    "write_report",
    # conditional VAE (issue 4)
    "completion_grid",
    "gsnn",
    "hybrid_cvae_gsnn",
    "merge_quadrants",
    "sample_completions",
    "split_quadrants",
    "VAEACImputer",
    "Recommender",  # collaborative filtering (issue 3)
    # inference gaps (issue 8)
    "InferenceGaps",
    "LocalOptimization",
    "analyze_gaps",
    "inference_gaps",
    "reuse_freed_memory",
    "flush_denormals",
]
