"""The shipped ImageNet-1k label list: standard ILSVRC-2012 index order, ``id name`` lines."""

import os

from conftest import ROOT

LABELS = os.path.join(ROOT, "ppcls", "utils", "imagenet1k_label_list.txt")


def test_label_list_has_the_1000_ilsvrc2012_classes_in_standard_order():
    with open(LABELS, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 1000
    ids = [int(line.split(" ", 1)[0]) for line in lines]
    assert ids == list(range(1000))
    assert lines[0] == "0 tench, Tinca tinca"
    assert lines[178] == "178 Weimaraner"
    assert lines[999] == "999 toilet tissue, toilet paper, bathroom tissue"
    # every class has a name; the known ImageNet homonym 'crane' (bird 134, machine 517) is the only repeat
    names = [line.split(" ", 1)[1] for line in lines]
    assert all(name.strip() == name and name for name in names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == ["crane"]
    assert names[134] == names[517] == "crane"
