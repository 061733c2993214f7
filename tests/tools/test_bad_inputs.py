"""Small bad inputs from the attack in issue 12: each is read right or refused with one clear line,
and decoding images leaves Python's once-only warnings once-only."""

import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image


def test_config_that_is_not_utf8_is_one_clear_line(tmp_path):
    from ppcls.utils.config import load_config
    from ppcls.utils.errors import ConfigError

    path = tmp_path / "latin1.yaml"
    path.write_bytes("Global:\n  epochs: 3\n# r\u00e9sum\u00e9 in Latin-1\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert str(path) in message and "UTF-8" in message and "0xe9" in message and "\n" not in message


def _image_root(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / "x.png")
    return str(root)


def test_list_file_with_utf8_bom_is_read(tmp_path):
    from ppcls.data.dataset import read_list_file

    root = _image_root(tmp_path)
    listing = tmp_path / "bom.txt"
    listing.write_bytes("\ufeffa/x.png 1\na/x.png 0\n".encode("utf-8"))  # as Windows Notepad saves
    images, labels, _ = read_list_file(str(listing), root, class_num=2)
    assert images == [os.path.join(root, "a/x.png")] * 2 and list(labels) == [1, 0]


@pytest.mark.parametrize("label", ["1_0", "\u0661", "1.0", "0x1"])  # \u0661: Arabic-Indic one
def test_label_that_is_not_plain_digits_is_refused(tmp_path, label):
    from ppcls.data.dataset import read_list_file
    from ppcls.utils.errors import DataError

    root = _image_root(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"a/x.png 0\na/x.png {label}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_list_file(str(listing), root, class_num=20)
    message = str(err.value)
    assert "list.txt" in message and "line 2" in message and repr(label) in message, message


def _warn_like_paddle():
    warnings.warn("When training, we now always track global mean and variance.", UserWarning)


def test_decoding_images_keeps_once_only_warnings_once(tmp_path):
    """Paddle's BatchNorm warning (shown once per place by Python's default filter) repeated every
    iteration because each decode reset the warning registry (catch_warnings per image)."""
    from ppcls.data.preprocess.decode import decode_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's own default: once per (message, place)
        decode_image(buf.getvalue())  # as in a run: the loader decodes before the first forward
        for _ in range(5):
            _warn_like_paddle()
            decode_image(buf.getvalue())
    assert len([w for w in seen if "track global mean" in str(w.message)]) == 1


def test_decompression_bomb_warning_is_still_silent(monkeypatch):
    """What the per-image catch_warnings was for: PIL's warning for a big image is not shown
    (our own size check names the limit)."""
    from ppcls.data.preprocess.decode import decode_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buf, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: warning, not error, in PIL
    with warnings.catch_warnings(record=True) as seen:  # the filters as they are in a run
        try:
            decode_image(buf.getvalue())
        except Exception:
            pass  # our own check may refuse it; only PIL's warning matters here
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
