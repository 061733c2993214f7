"""A tiny explicit registry: a name in a YAML file maps to a class or function.

Adding a component is one decorator, ``@MODELS.register``; looking one up with a name
that is not there is an error that lists every name that is.
"""


class Registry:
    def __init__(self, kind):
        self.kind = kind
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
