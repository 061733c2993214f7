"""Can PaddleClas's environment (numpy 1.24.4, which upstream pins, with paddlepaddle 3.3.1)
read the checkpoint files we write under numpy 2?

    python benchmark/numpy1_load.py --python /tmp/paddleclas-upstream-venv/bin/python \
        output/MobileNeXt_x1_0            # a run folder, or checkpoint files

Every ``.pdparams`` / ``.pdopt`` / ``.pdstates`` / ``.pdema`` given (or found in a folder) is
loaded twice: here (numpy 2, ``ppcls.utils.safe_load``) and by ``paddle.load`` in the other
interpreter. Each side prints a fingerprint of the content (every array's shape, dtype and
sum, every other value); they must be equal. For contrast, the first file is also re-pickled
as plain ``paddle.save`` writes it under numpy 2 (``numpy._core`` names) and loaded there: that
copy is expected to fail with ``No module named 'numpy._core'``. Exit code 0 when all of ours
load with equal fingerprints.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile

SUFFIXES = (".pdparams", ".pdopt", ".pdstates", ".pdema")

# runs in both interpreters: a fingerprint of what paddle.load returns
FINGERPRINT = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np

def fingerprint(obj):
    if hasattr(obj, "numpy") and not isinstance(obj, np.ndarray):
        obj = obj.numpy()
    if isinstance(obj, np.ndarray):
        return ["array", list(obj.shape), str(obj.dtype),
                float(np.asarray(obj, dtype=np.float64).sum()) if obj.dtype.kind in "biuf" else None]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): fingerprint(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [fingerprint(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return type(obj).__name__

def load_all(paths, load):
    out = {}
    for path in paths:
        try:
            out[path] = fingerprint(load(path))
        except Exception as err:
            out[path] = "ERROR " + type(err).__name__ + ": " + " ".join(str(err).split())[:200]
    return out
'''

OTHER = FINGERPRINT + r'''
import paddle
result = load_all(sys.argv[1:], lambda p: paddle.load(p, return_numpy=True))
print(json.dumps({"numpy": np.__version__, "paddle": paddle.__version__, "files": result}))
'''


def checkpoint_files(args):
    files = []
    for item in args:
        if os.path.isdir(item):
            files += sorted(os.path.join(item, n) for n in os.listdir(item) if n.endswith(SUFFIXES))
        else:
            files.append(item)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", required=True, help="the numpy 1.x interpreter")
    parser.add_argument("paths", nargs="+", help="checkpoint files or run folders")
    args = parser.parse_args(argv)
    files = checkpoint_files(args.paths)
    if not files:
        parser.error("no .pdparams/.pdopt/.pdstates/.pdema files given")

    import numpy as np
    import paddle

    from ppcls.utils.safe_load import safe_load

    scope = {}
    exec(FINGERPRINT, scope)  # noqa: S102 (our own constant code, above)
    ours = scope["load_all"](files, lambda p: safe_load(p, return_numpy=True))

    with tempfile.TemporaryDirectory(prefix="ppcls_np1_") as tmp:
        plain = os.path.join(tmp, "plain_numpy2" + os.path.splitext(files[0])[1])
        buf = io.BytesIO()
        paddle.save(safe_load(files[0], return_numpy=True), buf)  # plain paddle.save: numpy._core
        with open(plain, "wb") as f:
            f.write(buf.getvalue())
        proc = subprocess.run([args.python, "-c", OTHER] + files + [plain], capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=""))
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"here:  numpy {np.__version__}, paddle {paddle.__version__}")
    print(f"there: numpy {theirs['numpy']}, paddle {theirs['paddle']} ({args.python})")
    ok = True
    for path in files:
        other = theirs["files"][path]
        same = other == ours[path]
        ok &= same
        status = "loads, same content" if same else (other if isinstance(other, str) and
                                                      other.startswith("ERROR") else "DIFFERENT content")
        print(f"{'OK  ' if same else 'FAIL'} {path}: {status}")
    print(f"for contrast, {os.path.basename(files[0])} re-pickled by plain paddle.save under numpy 2: "
          f"{theirs['files'][plain] if isinstance(theirs['files'][plain], str) else 'loads'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
