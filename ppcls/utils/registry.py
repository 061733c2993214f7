"""A tiny explicit registry and the one builder every config section goes through.

A name in a YAML file maps to a class or function; adding a component is one decorator,
``@OPS.register``. :func:`build` turns a spec (a name plus keyword arguments) into the object:
it checks the name and every key ONCE against the constructor's signature (unknown keys,
missing required keys) and raises one ``ConfigError`` naming where in the config the problem
is, with "did you mean" when a close name exists. Values are the constructor's business: it
raises ``ConfigError`` or ``ValueError``, which ``build`` prefixes with ``where``.

Spec forms (as the YAML writes them):

- ``"ToCHWImage"`` or ``{"ToCHWImage": None}`` / ``{"CropImage": {"size": 224}}``: a list item
  (``transform_ops``, ``Loss.Train``, ``Metric.Eval``); ``where`` names the item
  (``DataLoader.Train.dataset.transform_ops.2``), errors name ``<where>.<Name>``.
- ``{"name": "Cosine", "learning_rate": 0.1, ...}``: a section (``Arch``, ``Optimizer``,
  ``Optimizer.lr``, ``DataLoader.Train.dataset``/``sampler``); errors name the config key
  ``<where>.<key>``.
"""

import difflib
import inspect

from ppcls.utils.errors import ConfigError


def suggest(word, known):
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry:
    def __init__(self, kind, noun=None, listing=None):
        self.kind = kind          # "transform op", "loss", ... (in "unknown <kind> 'X'")
        self.noun = noun or kind  # "op" in "op CropImage needs key 'size'"
        self.listing = listing or f"registered {kind}s"  # the label of the list of names
        self._items = {}

    def register(self, obj=None, *, name=None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(item):
            key = name or item.__name__
            if key in self._items and self._items[key] is not item:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name):
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise KeyError(f"unknown {self.kind} '{name}'; registered {self.kind}s: {known}")
        return self._items[name]

    def __contains__(self, name):
        return name in self._items

    def names(self):
        return sorted(self._items)


def accepted_keys(obj, supplied=()):
    """(keys a config may give, required ones, takes-any-key) for constructor ``obj``; the
    arguments in ``supplied`` come from the code, not the config."""
    target = obj.__init__ if inspect.isclass(obj) and "__signature__" not in vars(obj) else obj
    params = list(inspect.signature(target).parameters.values())
    if target is not obj and params and params[0].name == "self":
        params = params[1:]
    any_key = any(p.kind == p.VAR_KEYWORD for p in params)
    keys = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in supplied]
    required = [p.name for p in params if p.name in keys and p.default is p.empty]
    return keys, required, any_key


def split_spec(spec, where):
    """A spec -> ``(name, params dict, section style?)``; see the module docstring."""
    if isinstance(spec, str):
        return spec, {}, False
    if isinstance(spec, dict) and "name" in spec:
        params = dict(spec)
        return params.pop("name"), params, True
    if isinstance(spec, dict) and len(spec) == 1:
        (name, params), = spec.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping of parameters, got {params!r}")
        return name, dict(params), False
    raise ConfigError(f"{where}: expected a name with its parameters, got {spec!r}")


def build(spec, registry, where, /, **supplied):
    """Build the component ``spec`` names from ``registry``; ``supplied`` are the constructor
    arguments the code gives (``epochs``, ``parameters``, ``dataset``...), never the config."""
    name, params, section = split_spec(spec, where)
    if name not in registry:
        at = f"{where}.name" if section else where
        raise ConfigError(f"{at}: unknown {registry.kind} '{name}'; {registry.listing}: "
                          f"{', '.join(registry.names())}{suggest(name, registry.names())}")
    cls = registry.get(name)
    keys, required, any_key = accepted_keys(cls, supplied)
    named = accepted_keys(cls)[0]
    supplied = {k: v for k, v in supplied.items() if k in named or any_key}  # those it takes
    here = where if section else f"{where}.{name}"
    for key in params:
        if key not in keys and not (any_key and key not in supplied):
            if section:
                raise ConfigError(f"unknown config key '{where}.{key}'{suggest(key, keys)}; keys under "
                                  f"{where}: {', '.join(keys) or 'none'}")
            raise ConfigError(f"{here}: {registry.noun} {name} does not take key '{key}'"
                              f"{suggest(key, keys)}; it takes: {', '.join(keys) or 'no keys'}")
    missing = [k for k in required if k not in params]
    if missing:
        if section:
            raise ConfigError(f"config key '{where}.{missing[0]}' is missing ({name} needs it)")
        raise ConfigError(f"{here}: {registry.noun} {name} needs key '{missing[0]}'")
    try:
        return cls(**params, **supplied)
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"{here}: {err}") from None
