"""Gather what ``scripts/gpu_check.sh`` measured into one JSON report and a Markdown table.

Reads, in OUT_DIR: ``stages.tsv`` (exit code and seconds of each stage), ``cuda_tests.xml``
(pytest's JUnit file), ``bench_diffloss.json`` and ``bench_prior.json`` (possibly partial or
missing when a stage failed or hit its time limit). Writes ``gpu_check.json`` and
``gpu_check.md`` and prints the targets and everything that was skipped, with the reason.

The issue's targets at the paper's setting (full 256 ADM, FSDGN, batch 4, 256x256):

- ``diffloss_of_bf16_matmul``: the DiffLoss part of the step (its FLOPs over its seconds) at
  >= 40% of the bf16 matmul rate measured in the same run, for the best variant computing in a
  reduced dtype;
- ``whole_step_peak``: the whole step (weights, optimizer state, batch and the step's peak)
  under 20 GiB;
- ``restored_pass``: one restored-branch pass of the prior (weights + fwd+bwd peak, batch 4)
  under 12 GiB.

A memory target passes when at least one variant meets it; the report names which do.

    python scripts/gpu_report.py OUT_DIR [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffsr.utils.benchmark import write_json_report
from diffsr.utils.file_util import atomic_write_text

GIB = 2**30


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_stages(path: Path) -> dict[str, dict[str, Any]]:
    """Stage name -> {status, rc, seconds, limit_s}."""
    stages = {}
    if not path.is_file():
        return stages
    with path.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rc = row["rc"]
            if rc == "budget":
                status = "skipped: the time budget was spent"
            elif rc == "124":
                status = f"hit its {row['limit_s']} s limit (partial results)"
            else:
                status = "ok" if rc == "0" else f"failed (exit {rc})"
            stages[row["stage"]] = {
                "status": status,
                "rc": rc,
                "seconds": int(row["seconds"]),
                "limit_s": int(row["limit_s"]),
            }
    return stages


def read_junit(path: Path) -> dict[str, Any] | None:
    """Counts of the CUDA-marked tests and the skip reasons (None without the file)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    summary: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "skip_reasons": {}}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        skipped = case.find("skipped")
        if skipped is not None:
            summary["skipped"] += 1
            summary["skip_reasons"][name] = skipped.get("message", "")
        elif case.find("failure") is not None or case.find("error") is not None:
            summary["failed"] += 1
        else:
            summary["passed"] += 1
    return summary


def throughput_target(diffloss: dict[str, Any] | None) -> dict[str, Any]:
    target = (diffloss or {}).get("throughput_target") or {}
    best = target.get("best_reduced_precision_variant")
    if best is None:
        return {"status": "not measured", "want": ">= 40% of the bf16 matmul rate"}
    value = target["fraction_of_bf16_matmul"][best]
    return {
        "status": "pass" if target["met"] else "fail",
        "want": f">= {target['target_fraction']:.0%} of the bf16 matmul rate",
        "value": value,
        "variant": best,
        "bf16_matmul_tflops": target["bf16_matmul_flops_per_second"] / 1e12,
        "per_variant": target["fraction_of_bf16_matmul"],
    }


def memory_target(values: dict[str, int], limit: int, what: str) -> dict[str, Any]:
    """pass when at least one variant is under ``limit`` bytes."""
    if not values:
        return {"status": "not measured", "want": f"{what} < {limit / GIB:.0f} GiB"}
    under = [name for name, value in values.items() if value < limit]
    return {
        "status": "pass" if under else "fail",
        "want": f"{what} < {limit / GIB:.0f} GiB",
        "met_by": under,
        "per_variant_gib": {name: value / GIB for name, value in values.items()},
    }


def targets(diffloss: dict[str, Any] | None, prior: dict[str, Any] | None) -> dict[str, Any]:
    step = (diffloss or {}).get("memory_target") or {}
    passes = (prior or {}).get("pass_target") or {}
    return {
        "diffloss_of_bf16_matmul": throughput_target(diffloss),
        "whole_step_peak": memory_target(
            step.get("whole_step_peak_bytes", {}),
            step.get("whole_step_target_bytes", 20 * GIB),
            "whole-step peak",
        ),
        "restored_pass": memory_target(
            passes.get("pass_with_weights_bytes", {}),
            passes.get("target_bytes", 12 * GIB),
            "one restored-branch pass (weights + fwd+bwd peak)",
        ),
    }


def skipped_items(report: dict[str, Any]) -> list[str]:
    """Everything that did not run, with the reason."""
    items = []
    for name, stage in report["stages"].items():
        if stage["status"] != "ok":
            items.append(f"stage {name}: {stage['status']}")
    tests = report["cuda_tests"]
    if tests is None:
        items.append("CUDA-marked tests: no result file")
    else:
        items += [f"test {name}: {reason}" for name, reason in tests["skip_reasons"].items()]
    diffloss, prior = report["bench_diffloss"], report["bench_prior"]
    if diffloss is None:
        items.append("bench_diffloss: no report")
    else:
        items += [f"bench_diffloss {n}: {r}" for n, r in diffloss.get("skipped", {}).items()]
        if diffloss.get("partial"):
            items.append("bench_diffloss: partial report (the stage stopped early)")
    if prior is None:
        items.append("bench_prior: no report")
    else:
        items += [
            f"bench_prior {r['variant']}: {r['skipped']}"
            for r in prior.get("results", [])
            if "skipped" in r
        ]
    return items


def cell(value: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def markdown(report: dict[str, Any]) -> str:
    lines = ["# GPU check", ""]
    diffloss, prior = report["bench_diffloss"], report["bench_prior"]
    machine = (diffloss or prior or {}).get("machine", {})
    lines.append(
        f"Device: {machine.get('cuda_device') or 'CPU'}; torch {machine.get('torch', '?')}"
        + ("; **dry run** (tiny prior on the CPU, plumbing only)" if report["dry_run"] else "")
    )
    lines += ["", "## Targets", "", "| target | want | status | value |", "|---|---|---|---|"]
    for name, target in report["targets"].items():
        if "value" in target:
            value = f"{target['value']:.1%} ({target['variant']})"
        elif "per_variant_gib" in target:
            value = ", ".join(f"{n} {v:.2f} GiB" for n, v in target["per_variant_gib"].items())
        else:
            value = "–"
        lines.append(f"| {name} | {target['want']} | **{target['status']}** | {value} |")
    if diffloss is not None:
        lines += [
            "",
            "## One training step (bench_diffloss.py)",
            "",
            "| variant | ms/step | DiffLoss ms | DiffLoss TFLOP/s | of bf16 matmul | step peak GiB "
            "| whole step GiB | saved GiB | loss rel. diff | grad rel. diff |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in diffloss.get("results", {}).items():
            lines.append(
                f"| {name} | {cell(r.get('step_s'), '.1f', 1e3)} "
                f"| {cell(r.get('diffloss_s'), '.1f', 1e3)} "
                f"| {cell(r.get('diffloss_flops_per_second'), '.1f', 1e-12)} "
                f"| {cell(r.get('fraction_of_bf16_matmul'), '.1%')} "
                f"| {cell(r.get('peak_memory_bytes'), '.2f', 1 / GIB)} "
                f"| {cell(r.get('whole_step_peak_bytes'), '.2f', 1 / GIB)} "
                f"| {cell(r.get('saved_for_backward_bytes'), '.2f', 1 / GIB)} "
                f"| {cell(r.get('loss_rel_diff'), '.1e')} | {cell(r.get('grad_rel_diff'), '.1e')} |"
            )
        for name, reason in diffloss.get("skipped", {}).items():
            lines.append(f"| {name} | skipped: {reason} |" + " |" * 8)
    if prior is not None:
        lines += [
            "",
            "## The prior alone (bench_prior.py)",
            "",
            "| variant | forward ms | fwd+bwd ms | weights GiB | pass peak GiB | pass + weights GiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in prior.get("results", []):
            if "skipped" in r:
                lines.append(f"| {r['variant']} | skipped: {r['skipped']} |" + " |" * 4)
                continue
            lines.append(
                f"| {r['variant']} | {cell(r['forward_s'], '.1f', 1e3)} "
                f"| {cell(r['fwd_bwd_s'], '.1f', 1e3)} | {cell(r['weight_bytes'], '.2f', 1 / GIB)} "
                f"| {cell(r['peak_memory_bytes'], '.2f', 1 / GIB)} "
                f"| {cell(r['pass_with_weights_bytes'], '.2f', 1 / GIB)} |"
            )
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    for name, stage in report["stages"].items():
        lines.append(f"| {name} | {stage['status']} | {stage['seconds']} |")
    tests = report["cuda_tests"]
    if tests is not None:
        lines.append(
            f"\nCUDA-marked tests: {tests['passed']} passed, {tests['failed']} failed, "
            f"{tests['skipped']} skipped."
        )
    if report["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {item}" for item in report["skipped"]]
    return "\n".join(lines) + "\n"


def build_report(out_dir: Path, dry_run: bool) -> dict[str, Any]:
    diffloss = read_json(out_dir / "bench_diffloss.json")
    prior = read_json(out_dir / "bench_prior.json")
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "stages": read_stages(out_dir / "stages.tsv"),
        "cuda_tests": read_junit(out_dir / "cuda_tests.xml"),
        "targets": targets(diffloss, prior),
        "bench_diffloss": diffloss,
        "bench_prior": prior,
    }
    report["skipped"] = skipped_items(report)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="the folder gpu_check.sh wrote to")
    parser.add_argument("--dry-run", action="store_true", help="figures of a tiny CPU dry run")
    args = parser.parse_args(argv)
    report = build_report(args.out_dir, args.dry_run)
    write_json_report(args.out_dir / "gpu_check.json", report)
    atomic_write_text(args.out_dir / "gpu_check.md", markdown(report))
    print(f"wrote {args.out_dir / 'gpu_check.md'}")
    for name, target in report["targets"].items():
        print(f"target {name} ({target['want']}): {target['status']}")
    for item in report["skipped"]:
        print(f"skipped: {item}")
    return report


if __name__ == "__main__":
    main()
