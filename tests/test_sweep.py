"""scripts/sweep.py: the grid, validation before any run, resume, refusal to mix, results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.fixtures import read_jsonl, train_options, write_options
from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def sweep():
    return load_script("sweep")


@pytest.fixture
def tiny_options(tmp_path: Path) -> Path:
    opt = train_options(tmp_path / "data", total_iter=2)
    opt["val"]["val_freq"] = 2
    opt["logger"]["save_checkpoint_freq"] = 100
    return write_options(tmp_path / "tiny.yml", opt)


def test_values_split_outside_brackets_and_axes_are_checked(sweep):
    assert sweep.split_values("0, 0.001,[1,2],{a: 1, b: 2},'x,y'") == [
        "0",
        "0.001",
        "[1,2]",
        "{a: 1, b: 2}",
        "'x,y'",
    ]
    assert sweep.parse_axes(["a.b=1,2", "c=x"]) == [("a.b", ["1", "2"]), ("c", ["x"])]
    for bad, message in [
        (["a=1", "a=2"], "given twice"),
        (["manual_seed=1,2"], "--seeds"),
        (["path.models=x"], "sets this itself"),
        (["a"], "KEY=V1"),
        (["a=1,,2"], "empty value"),
    ]:
        with pytest.raises(sweep.SweepError, match=message):
            sweep.parse_axes(bad)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("train.optim_g.lrr=0.1,0.2", "lrr"),  # not an option
        ("train.total_iter=2,abc", "train.total_iter"),  # wrong type at one grid point
        ("train.pixel_opt.loss_weight=1,heavy", "train.pixel_opt.loss_weight"),  # loss block
        ("train.pixel_opt.reduction=mean,3", "train.pixel_opt.reduction"),
    ],
)
def test_bad_keys_and_values_stop_before_any_run(
    sweep, tiny_options, tmp_path, capsys, setting, named
):
    out = tmp_path / "sweep"
    assert sweep.main(["-opt", str(tiny_options), "--set", setting, "--out", str(out)]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()  # nothing started, nothing written


def _final_psnr(run_dir: Path) -> float:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "psnr" in r][-1]["psnr"]


def test_sweep_runs_resumes_and_refuses_other_options(sweep, tiny_options, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["-opt", str(tiny_options), "--set", "train.total_iter=2", "--out", str(out)]
    args += ["--poll", "0.2"]
    assert sweep.main([*args, "--seeds", "1"]) == 0
    capsys.readouterr()
    # "stopped" after one seed: asking for two runs only the missing one
    assert sweep.main([*args, "--seeds", "2", "--jobs", "2"]) == 0
    assert "1 run(s) finished before, 1 to run" in capsys.readouterr().out
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["total_iter=2_seed7", "total_iter=2_seed8"]
    psnr = [_final_psnr(r) for r in runs]
    result = json.loads((out / "results.json").read_text())
    (group,) = result["groups"]
    assert group["seeds"] == [7, 8]
    assert group["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(psnr), rel=1e-12)
    assert group["metrics"]["psnr"]["std"] == pytest.approx(np.std(psnr, ddof=1), rel=1e-12)
    assert "+-" in (out / "results.md").read_text()
    assert result["environment"]["torch_threads"] >= 1
    # a third call redoes nothing
    assert sweep.main([*args, "--seeds", "2"]) == 0
    assert "2 run(s) finished before, 0 to run" in capsys.readouterr().out
    # other base options into the same folder: refused, nothing mixed
    text = tiny_options.read_text().replace("lr: 0.001", "lr: 0.002")
    assert text != tiny_options.read_text()
    tiny_options.write_text(text)
    assert sweep.main([*args, "--seeds", "2"]) == 2
    assert "other base options" in capsys.readouterr().err


def test_table_and_plot_of_finished_runs(sweep, tmp_path):
    runs = []
    values = {"0": [20.0, 21.0, 22.5], "0.001": [20.5, 20.0, 21.0], "0.01": [19.0, 19.5, 18.0]}
    for gamma, psnrs in values.items():
        for seed, psnr in enumerate(psnrs):
            point = [["train.diffloss_opt.loss_weight", gamma], ["train.total_iter", "200"]]
            runs.append(
                {
                    "label": sweep.point_label(point),
                    "point": point,
                    "seed": seed,
                    "metrics": {"psnr": psnr, "grad_share_diffloss_mean": float(gamma) * 3},
                }
            )
    sweep.write_results(tmp_path, [], runs)
    table = (tmp_path / "results.md").read_text()
    assert "| train.diffloss_opt.loss_weight | seeds | psnr |" in table  # constant keys left out
    for gamma, psnrs in values.items():
        mean, std = np.mean(psnrs), np.std(psnrs, ddof=1)
        assert f"| {gamma} | 3 | {mean:.4g} +- {std:.2g} |" in table
    assert (tmp_path / "psnr.png").stat().st_size > 1000
    assert not (tmp_path / "grad_share_diffloss_mean.png").exists()
