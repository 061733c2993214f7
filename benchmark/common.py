"""Shared pieces of the benchmark scripts: running workers, medians, the environment header."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*modules):
    found = {}
    for name in modules:
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return found


def header(title, modules=("paddle",)):
    """Lines naming what, where and when: CPU model and count, load, date, versions."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return [
        f"# {title}",
        f"# machine: {cpu_model()}, {os.cpu_count()} CPUs; load average {load[0]:.2f} at start",
        f"# date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "# versions: python " + platform.python_version() + ", " +
        ", ".join(f"{k} {v}" for k, v in versions(*modules).items()),
    ]


def run_worker(script, args, env=None, timeout=3600):
    """Run ``python script --worker ...`` and return the JSON object its last line prints."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"worker {' '.join(args)} failed: " + " | ".join(tail))
    return json.loads(lines[-1])


def median(values):
    return statistics.median(values)


def spread(values):
    return f"{min(values):.3g}-{max(values):.3g}" if len(values) > 1 else ""


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(headers))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print(line(row))


# The training-reader benchmarks (reader_steps, reader_accuracy, reader_ab, data_speed).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
SEED_RECIPE = os.path.join(SHARED, "fixtures", "paddleclas", "seed", "MobileNeXt_100.yaml")
READER_BENCH = os.path.join(SHARED, "bench", "reader_bench.py")


def reader_dataset_keys(config, image_dir):
    """The recipe's ``DataLoader.Train.dataset`` keys (without ``name``) on the bench images."""
    import yaml

    with open(config) as f:
        keys = dict(yaml.safe_load(f)["DataLoader"]["Train"]["dataset"])
    keys.pop("name")
    keys["image_root"], keys["cls_label_path"] = image_dir, os.path.join(image_dir, "train_list.txt")
    return keys


def ensure_bench_images(image_dir):
    """../shared/bench's 256 ImageNet-size JPEGs in ``image_dir`` (made once)."""
    if not os.path.isfile(os.path.join(image_dir, "train_list.txt")):
        subprocess.run([sys.executable, READER_BENCH, "make", image_dir, "256"], check=True)


def checkout_roots(base):
    """{label: root of a checkout holding its ppcls}: this one, after ``base`` when given."""
    roots = {"this checkout": ROOT}
    return {"base": os.path.abspath(base), **roots} if base else roots
