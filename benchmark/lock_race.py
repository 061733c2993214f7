"""Two trainings into one run folder at once, as a user starting a second one by mistake would:

    python benchmark/lock_race.py [--offsets 0.3 0.8 1.3 1.8 2.3] [--work /tmp/lock_race]

1. Pairs of fresh ``tools/train.py`` runs into one ``Global.output_dir``, the second started
   0.3-2.3 s after the first, with both CPU cores kept busy by two spinning processes. In each
   pair whose runs overlapped, exactly one must train (exit 0, its epochs in its log) and the
   other stop with the one ``Error: ... is in use by another training`` line (exit 2).
2. A run folder reached through a symlink (``sB/<Arch> -> sA/<Arch>``), resumed through both
   paths at once: exactly one trains.

No output may hold a Python traceback. Exit code 0 when all of that holds. Takes a few minutes
(tiny data: 48 scikit-learn digits, MobileNeXt_x0_35 at 32 px, 2 epochs).
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart", "MobileNeXt_x1_0_digits.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")
ARCH = "MobileNeXt_x0_35"


def _spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass


def overrides(data, out, epochs=2, extra=()):
    o = []
    for mode, name in (("Train", "train_small.txt"), ("Eval", "val_small.txt")):
        o += [f"DataLoader.{mode}.dataset.image_root={data}",
              f"DataLoader.{mode}.dataset.cls_label_path={os.path.join(data, name)}",
              f"DataLoader.{mode}.sampler.batch_size=8", f"DataLoader.{mode}.loader.num_workers=0"]
    o += [f"Arch.name={ARCH}", "Global.device=cpu", f"Global.output_dir={out}",
          f"Global.epochs={epochs}", "Global.seed=7", "Optimizer.lr.warmup_epoch=0",
          "DataLoader.Train.dataset.transform_ops.1.RandCropImage.size=32",
          "DataLoader.Eval.dataset.transform_ops.1.ResizeImage.size=32", *extra]
    cmd = [sys.executable, TRAIN, "-c", CONFIG]
    for item in o:
        cmd += ["-o", item]
    return cmd


def start(cmd):
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))


def outcome(proc):
    out, _ = proc.communicate(timeout=900)
    trained = "[Train][Epoch" in out and "][Avg]" in out
    refused = "is in use by another training" in out
    return {"code": proc.returncode, "trained": trained, "refused": refused,
            "traceback": "Traceback" in out, "end": time.time(), "tail": out[-600:],
            "moved": "held an earlier run; moved it" in out}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--offsets", type=float, nargs="+", default=[0.3, 0.8, 1.3, 1.8, 2.3])
    parser.add_argument("--work", default="/tmp/ppcls_lock_race")
    args = parser.parse_args(argv)
    from ppcls.data.digits import prepare_digits

    data = os.path.join(args.work, "digits")
    if not os.path.isfile(os.path.join(data, "val_small.txt")):
        prepare_digits(data, size=32, progress=False)
        for src, dst, n in (("train_list.txt", "train_small.txt", 48), ("val_list.txt", "val_small.txt", 16)):
            with open(os.path.join(data, src)) as f:
                lines = f.read().splitlines()[:n]
            with open(os.path.join(data, dst), "w") as f:
                f.write("\n".join(lines) + "\n")
    spinners = [multiprocessing.Process(target=_spin, args=(3600,), daemon=True) for _ in range(2)]
    for s in spinners:
        s.start()
    ok = True
    try:
        print("offset  first (code, trained)  second (code, trained, refused)  overlapped  verdict")
        for i, offset in enumerate(args.offsets):
            out = os.path.join(args.work, f"pair{i}")
            first = start(overrides(data, out))
            time.sleep(offset)
            second = start(overrides(data, out, extra=["Global.seed=8"]))
            t1 = time.time()
            a, b = outcome(first), outcome(second)
            overlapped = a["end"] > t1  # the first still ran when the second started
            good = not a["traceback"] and not b["traceback"] and a["code"] == 0 and a["trained"]
            if overlapped:
                # refused; or (its imports outlasting the first run) it locked only after the
                # first had released, and moved that finished run aside instead of mixing with it
                good &= (b["code"] == 2 and b["refused"] and not b["trained"]) or \
                        (b["code"] == 0 and b["trained"] and b["moved"])
            ok &= good
            print(f"{offset:5.1f}s  ({a['code']}, {a['trained']})  ({b['code']}, {b['trained']}, "
                  f"{b['refused']})  {overlapped}  {'OK' if good else 'FAIL'}")
            if not good:
                print(a["tail"], "\n----\n", b["tail"])
        # 2. a symlinked run folder resumed through both paths at once
        base = os.path.join(args.work, "sym")
        first = start(overrides(data, os.path.join(base, "sA"), epochs=1))
        a = outcome(first)
        os.makedirs(os.path.join(base, "sB"), exist_ok=True)
        link = os.path.join(base, "sB", ARCH)
        if not os.path.islink(link):
            os.symlink(os.path.join(base, "sA", ARCH), link)
        latest = os.path.join(base, "sA", ARCH, "latest")
        resume = [f"Global.checkpoints={latest}"]
        p1 = start(overrides(data, os.path.join(base, "sA"), epochs=3, extra=resume))
        p2 = start(overrides(data, os.path.join(base, "sB"), epochs=3, extra=resume))
        r1, r2 = outcome(p1), outcome(p2)
        trained = [r for r in (r1, r2) if r["code"] == 0 and r["trained"]]
        refused = [r for r in (r1, r2) if r["code"] == 2 and r["refused"]]
        good = a["code"] == 0 and len(trained) == 1 and len(refused) == 1 and \
            not (r1["traceback"] or r2["traceback"])
        with open(os.path.join(base, "sA", ARCH, "train.log")) as f:
            blocks = f.read().count("[Train][Epoch 2/3][Avg]")
        good &= blocks == 1
        ok &= good
        print(f"symlinked folder resumed twice at once: {len(trained)} trained, {len(refused)} "
              f"refused, 'Epoch 2/3' blocks in train.log: {blocks}  {'OK' if good else 'FAIL'}")
        if not good:
            print(r1["tail"], "\n----\n", r2["tail"])
    finally:
        for s in spinners:
            s.terminate()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
