"""The command line a researcher meets first: it says what it measured, starts fast, and tells its version."""

from __future__ import annotations

import subprocess
import sys
import warnings

from conftest import REPO, TINY_TRAIN, run_main


def test_version():
    code, out, err = run_main(["--version"])
    assert code == 0 and out.startswith("ganlab ") and out.split()[1][0].isdigit()


def test_help_imports_no_torch_so_it_starts_at_once():
    """--help builds every command's parser (core and plugins) without importing torch, pandas or Ray."""
    code = ("import sys\nfrom ganlab.cli import build_parser\n"
            "for argv in (['--help'], ['prune', '--help'], ['sweep', 'prune', '--help']):\n"
            "    try:\n        build_parser().parse_args(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'ray', 'mlflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_train_prints_a_line_per_epoch_and_a_summary(store):
    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "2", "--eval-every", "1", "--eval-samples", "150"])
    assert code == 0, err
    lines = out.strip().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1", "2"] and all("fcd" in line for line in epochs)
    assert lines[-3].startswith("trained: FCD ") and lines[-2].startswith("ui: ") and lines[-1].startswith("run_id: ")


def test_prune_and_evaluate_say_what_they_measured(trained):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "50", "--samples",
                               "150", "--eval-draws", "2", "--no-progress"])
    assert code == 0, err
    summary = out.strip().splitlines()[-3]
    assert summary.startswith("pruned: sparsity 0.500, FCD ") and "vs dense" in summary and "ratio" in summary
    assert "coverage" in summary and ("MB" in summary or "kB" in summary)
    code, out, err = run_main(["evaluate", "--run-id", source, "--samples", "150", "--no-progress"])
    assert code == 0, err
    assert out.strip().splitlines()[-3].startswith("evaluated: FCD ")


def test_scoring_raises_no_warning_the_user_cannot_act_on(evaluator_32):
    import torch

    fake = torch.rand(200, 1, 32, 32) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator_32.evaluate_images(fake)


def test_bool_flags_say_their_defaults_in_words():
    code, out, _ = run_main(["train", "--help"])
    assert "(default: False)" not in out and "(default: True)" not in out and "(default: off)" in out
