"""Render benchmark JSON files (from benchmarks/run.py --json) as one markdown table.

    python benchmarks/report.py benchmarks/results/cpu_before.json benchmarks/results/cpu_after.json

With two files the table shows both runs' ratios side by side (before, after).
"""

import json
import sys


def rows(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for r in data["results"]:
        modes = [m for m in ("forward", "fwd+bwd", "inference", "train_step") if m in r]
        for m in modes:
            out[(r["case"], m)] = r[m]
        if "memory_ratio" in r:
            mem = r["peak_memory_mb"]
            out[(r["case"], "peak memory")] = {"minidl_ms": mem["minidl"], "torch_ms": mem.get("torch"),
                                              "ratio": r["memory_ratio"], "memory": True}
    return data["info"], out


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def main(paths):
    runs = [rows(p) for p in paths]
    info, last = runs[-1]
    print("Machine: %s, %s CPUs, %s thread(s); SGEMM %.0f GFLOP/s, copy %.1f GB/s (measured in the last run); "
          "numpy %s, torch %s.\n" % (info["machine"], info["cpus"], info["threads"], info["limits"]["sgemm_gflops"],
                                    info["limits"]["copy_gbs"], info["numpy"], info["torch"]))
    head = "| case | mode | minidl | PyTorch | ratio |" + "".join(" ratio (%s) |" % p.split("/")[-1] for p in paths[:-1])
    print(head)
    print("|" + " --- |" * (5 + len(paths) - 1))
    for key, r in last.items():
        unit = " MB" if r.get("memory") else " ms"
        cells = [key[0], key[1], fmt(r["minidl_ms"]) + unit, fmt(r["torch_ms"]) + unit, fmt(r["ratio"])]
        cells += [fmt(prev.get(key, {}).get("ratio")) for _, prev in runs[:-1]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
