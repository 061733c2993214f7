"""Regenerate ``ppcls/utils/imagenet1k_label_list.txt`` from a published source.

Source: the ``timm`` wheel on PyPI (pinned below), which ships two plain-text files taken from
the ILSVRC-2012 development kit / WordNet:

- ``timm/data/_info/imagenet_synsets.txt``: the 1,000 ILSVRC-2012 synset ids (``n01440764`` ...)
  in the standard class-index order (sorted wnids, the order every ImageNet-1k checkpoint uses);
- ``timm/data/_info/imagenet_synset_to_lemma.txt``: ``wnid<TAB>lemmas`` for every WordNet synset.

Line ``i`` of the output is ``i <lemmas of the i-th synset>``, e.g. ``0 tench, Tinca tinca``.
timm is read from the downloaded wheel only; it is not a dependency of this project.

    python tools/make_imagenet_label_list.py                  # pip-downloads the pinned wheel
    python tools/make_imagenet_label_list.py --wheel timm-1.0.31-py3-none-any.whl
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

TIMM_VERSION = "1.0.31"
SYNSETS = "timm/data/_info/imagenet_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "ppcls", "utils", "imagenet1k_label_list.txt")


def download_wheel(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                    f"timm=={TIMM_VERSION}", "-d", dest], check=True)
    wheels = glob.glob(os.path.join(dest, "timm-*.whl"))
    if not wheels:
        sys.exit(f"Error: pip download left no timm wheel in {dest}")
    return wheels[0]


def label_lines(wheel):
    with zipfile.ZipFile(wheel) as zf:
        synsets = zf.read(SYNSETS).decode("utf-8").split()
        lemmas = dict(line.split("\t", 1)
                      for line in zf.read(LEMMAS).decode("utf-8").splitlines() if "\t" in line)
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        sys.exit(f"Error: {wheel}:{SYNSETS} lists {len(synsets)} synsets, expected 1000 distinct")
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        sys.exit(f"Error: {wheel}:{LEMMAS} has no lemmas for {', '.join(missing[:5])}")
    return [f"{i} {lemmas[wnid].strip()}" for i, wnid in enumerate(synsets)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help="a downloaded timm wheel (default: pip download it)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output label list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = label_lines(args.wheel or download_wheel(tmp))
    out_tmp = f"{args.out}.tmp{os.getpid()}"
    with open(out_tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_tmp, args.out)
    print(f"wrote {len(lines)} classes to {args.out}")


if __name__ == "__main__":
    main()
