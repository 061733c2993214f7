"""PaddleClas-schema YAML configs: load, apply ``-o Key.sub=value`` overrides, validate, print, save.

The config is a plain nested ``dict``. Sections: ``Global``, ``Arch``, ``Loss``, ``Optimizer``,
``DataLoader``, ``Metric``, ``Infer``, ``AMP``, ``EMA`` (and, for deployment configs,
``PreProcess`` / ``PostProcess``). ``Global`` (``ppcls.utils.global_config.GLOBAL``) and the top level have a schema: a key that is not
in it, or a value of the wrong type, is a ``ConfigError`` naming the key and what was expected.
Inside the other sections a builder checks its own part (an op or a constructor that does not
take a key names it).
"""

import copy
import difflib
import os
import re

import yaml

from ppcls.utils.errors import ConfigError
from ppcls.utils.global_config import GLOBAL_SCHEMA  # key -> accepted types (from the one table)

SECTIONS = ("Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "Infer", "AMP", "EMA",
            "PreProcess", "PostProcess")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
               list: "a list", dict: "a mapping", type(None): "null"}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` (no dot) as a float, as users write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_value(text):
    """A value as YAML reads it (``10`` -> int, ``1e-5`` -> float, ``[1,2]`` -> list, ``True``).

    ``None`` is also null (PaddleClas evaluates ``-o`` values as Python literals, so
    ``-o Global.pretrained_model=None`` means no weights), as YAML's ``null`` / ``~`` are.
    """
    if text.strip() == "None":
        return None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


MAX_CONFIG_BYTES = 8 << 20   # a PaddleClas config is a few KB; a 50 MB one took 263 s to parse
MAX_CONFIG_VALUES = 200_000  # values after YAML aliases are expanded (a recipe has a few hundred)


def check_size(cfg, source):
    """``cfg`` expands to at most :data:`MAX_CONFIG_VALUES` values. YAML aliases (``*a``) share
    one object, so a "billion laughs" file loads small and explodes only when printed, saved or
    deep-copied; counted here over the shared structure (memoised), so it costs one pass."""
    sizes = {}

    def size(node):
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1  # (a cycle counts once: a recursive alias cannot expand forever here)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                break
        sizes[key] = total
        return total

    try:
        too_big = size(cfg) > MAX_CONFIG_VALUES
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply") from None
    if too_big:
        raise ConfigError(f"{source}: the config expands to more than {MAX_CONFIG_VALUES:,} values "
                          "(YAML aliases nested into each other?); refusing to expand it")


def load_config(path):
    """Read a YAML config file into a dict; a missing or malformed file is a ``ConfigError``."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {os.path.getsize(path) / 2 ** 20:.0f} MB; a config is a "
                              f"few KB (at most {MAX_CONFIG_BYTES >> 20} MB is read)")
    except OSError:
        pass
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.load(f, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                          f"{err.start}); save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (Global, Arch, ...) at the top")
    check_size(cfg, path)
    return cfg


def _describe(types):
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _type_ok(value, types):
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _expected_types(path, old):
    """The types a value at ``path`` may take: from the schema, else from the value it replaces."""
    if len(path) == 2 and path[0] == "Global" and path[1] in GLOBAL_SCHEMA:
        return GLOBAL_SCHEMA[path[1]]
    if old is None:
        return None
    if isinstance(old, bool):
        return (bool,)
    if isinstance(old, (int, float)):
        return (int, float)
    if isinstance(old, str):
        return (str, int, float, type(None))
    if isinstance(old, (list, dict)):
        return (type(old),)
    return None


def _closed(path):
    """Whether new keys are refused under ``path`` (the top level and ``Global`` have a schema)."""
    return len(path) == 0 or (len(path) == 1 and path[0] == "Global")


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def apply_override(cfg, override):
    """Apply one ``Key.sub.0.leaf=value`` override to ``cfg`` in place."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form Key.sub=value")
    dotted, text = override.split("=", 1)
    path = [p for p in dotted.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override '{override}': empty key in '{dotted}'")
    value = parse_value(text)
    node, walked = cfg, []
    for i, key in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(walked) or "the top level"
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(f"override '{dotted}': {where} is a list of {len(node)} items, "
                                  f"'{key}' is not an index in it")
            key = int(key)
        elif isinstance(node, dict):
            if key not in node and not walked and not last and key in SECTIONS:
                node[key] = {}  # -o AMP.level=O1 on a config without an AMP section
            if key not in node and not (walked == ["Global"] and last and key in GLOBAL_SCHEMA):
                if _closed(walked) or not last:
                    known = sorted(GLOBAL_SCHEMA) if walked == ["Global"] else list(node)
                    raise ConfigError(f"unknown config key '{dotted}'{_suggest(key, known)}; "
                                      f"keys under {where}: {', '.join(map(str, known))}")
        else:
            raise ConfigError(f"override '{dotted}': {where} is a value, not a section")
        if last:
            old = node[key] if (isinstance(node, list) or key in node) else None
            types = _expected_types(path, old)
            if types is not None and not _type_ok(value, types):
                raise ConfigError(f"config key '{dotted}' expects {_describe(types)}, "
                                  f"got {text!r}")
            if isinstance(old, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = text
            node[key] = value
        else:
            node = node[key]
            walked.append(str(key))
    return cfg


def validate_config(cfg, source="config"):
    """Check the top level and ``Global`` against the schema."""
    for section, body in cfg.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}'{_suggest(section, SECTIONS)}; "
                              f"known sections: {', '.join(SECTIONS)}")
        if section in ("Global", "Arch", "Loss", "Optimizer", "DataLoader") and not isinstance(body, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
    for key, value in (cfg.get("Global") or {}).items():
        if key not in GLOBAL_SCHEMA:
            raise ConfigError(f"{source}: unknown config key 'Global.{key}'"
                              f"{_suggest(key, GLOBAL_SCHEMA)}")
        if not _type_ok(value, GLOBAL_SCHEMA[key]):
            raise ConfigError(f"{source}: config key 'Global.{key}' expects "
                              f"{_describe(GLOBAL_SCHEMA[key])}, got {value!r}")
    return cfg


def get_config(path, overrides=None, show=False):
    """Load ``path``, apply the ``-o`` overrides in order, validate; optionally print it."""
    cfg = load_config(path)
    for override in overrides or []:
        apply_override(cfg, override)
    check_size(cfg, f"{path} with its -o overrides" if overrides else path)
    validate_config(cfg, source=path)
    if show:
        print_config(cfg)
    return cfg


def format_config(cfg, indent=0):
    """The config as indented ``key : value`` lines, sections under a rule, as PaddleClas prints it."""
    lines = []
    for key, value in cfg.items():
        pad = " " * indent
        if isinstance(value, dict):
            if indent == 0:
                lines.append("-" * 60)
            lines.append(f"{pad}{key} : ")
            lines.extend(format_config(value, indent + 4))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} : ")
            for item in value:
                lines.extend(format_config(item, indent + 4))
        else:
            lines.append(f"{pad}{key} : {value}")
    return lines


def print_config(cfg):
    from ppcls.utils import logger

    for line in format_config(cfg):
        logger.info(line)


def save_config(cfg, path):
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(copy.deepcopy(cfg), f, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    except OSError as err:  # disk full, read-only: one line, no debris
        from ppcls.utils.errors import write_error

        try:
            os.remove(tmp)
        except OSError:
            pass
        raise write_error(err, path, "saving the run's config") from None
