"""Write weir plugins in Python.

A plugin is a module with one decorated function::

    import weir

    @weir.filter
    def big_orders(record: weir.Record, config: dict) -> bool:
        return record.json()["amount"] > config["min"]

``@weir.filter`` functions say whether to keep a record; ``@weir.transform`` functions return a
record, a list of records (none, one or many) or ``None``. ``@weir.window`` goes on a class that
aggregates the records of one key in one event-time window (the pipeline says which windows; weir
assigns records to them, keeps the accumulators and fires windows on the watermark)::

    @weir.window
    class Count:
        def create(self, window):            # a fresh accumulator (anything JSON can hold)
            return 0
        def add(self, count, record):        # fold a record in, return the accumulator
            return count + 1
        def merge(self, a, b, window):       # two sessions that came to touch
            return a + b
        def emit(self, window, count):       # a record, a list of records or None
            return weir.Record(value=weir.dumps({"count": count}))

Its ``__init__`` gets the configuration, if it takes an argument. An emitted record without a key
gets the window's, and one without a timestamp the window's last millisecond. A function takes the record, and
optionally the configuration and the record's keyed state: ``f(record)``, ``f(record, config)``
or ``f(record, config, state)``. Raise ``weir.Fail("why")`` (or any exception) to fail one record:
the pipeline's error policy decides what becomes of it, and its state writes are dropped.
``@weir.config`` marks a function that checks the configuration once, when the plugin starts;
what it returns is the ``config`` the record function gets. On a class (a dataclass, say), the
configuration's fields are its arguments: a missing or unknown field fails the start::

    @weir.config
    @dataclasses.dataclass
    class Config:
        min: float
        currency: str = "EUR"

The batch encoding of weir's contract stays inside this package, as in the Rust SDK.
"""

import json as _json
import sys as _sys

# Every module is imported here, at build time: componentize-py snapshots the interpreter after
# the imports, and a running plugin has no files to import anything more from.
from componentize_py_types import Err as _Err
from wit_world.imports import host as _host, types as _types

# What a plugin prints goes to weir's log a line at a time: flush stdout at each line, as on a
# terminal, rather than when its buffer fills.
_sys.stdout.reconfigure(line_buffering=True)

try:
    from wit_world.imports import state as _wit_state
except ImportError:  # a world without keyed state
    _wit_state = None

try:
    from wit_world.imports import tables as _wit_tables
except ImportError:  # a world without tables
    _wit_tables = None

__all__ = [
    "Record", "Fail", "State", "Pointer", "MISSING", "Window", "filter", "transform", "window",
    "config", "log", "dumps",
]


class Fail(Exception):
    """One record's failure; its message is the reason the dead-letter topic records."""


class Record:
    """A record: key and value are bytes (or None), headers a list of (name, bytes)."""

    __slots__ = ("key", "value", "headers", "timestamp", "topic", "partition", "offset")

    def __init__(self, key=None, value=None, headers=None, timestamp=0, topic="",
                 partition=0, offset=0):
        self.key = _bytes(key)
        self.value = _bytes(value)
        self.headers = headers if headers is not None else []
        self.timestamp = timestamp
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def json(self):
        """The value parsed as JSON."""
        if self.value is None:
            raise Fail("record has no value (tombstone)")
        try:
            return _json.loads(self.value)
        except ValueError as e:
            raise Fail(f"value is not the expected JSON: {e}") from None

    def header(self, name):
        """The first header called ``name``, as bytes, or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def replace(self, **changes):
        """A copy with some fields changed (``key``, ``value``, ``headers``, ``timestamp``)."""
        copy = Record(self.key, self.value, self.headers, self.timestamp, self.topic,
                      self.partition, self.offset)
        for name, value in changes.items():
            setattr(copy, name, _bytes(value) if name in ("key", "value") else value)
        return copy

    def with_json(self, value):
        """A copy whose value is ``value`` written as compact JSON (as serde_json writes it)."""
        return self.replace(value=dumps(value))

    def with_key(self, key):
        return self.replace(key=key)

    def without_value(self):
        """This record as a tombstone: same key, headers and timestamp, no value."""
        return self.replace(value=None)

    def __repr__(self):
        return f"Record(key={self.key!r}, value={self.value!r}, headers={self.headers!r})"


def dumps(value):
    """``value`` as compact JSON bytes, keys in their order, UTF-8 unescaped."""
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _bytes(value):
    return value.encode() if isinstance(value, str) else value


class State:
    """The keyed state of the record being processed: named JSON values the host keeps."""

    def get(self, name):
        return _parsed(self.get_bytes(name), f"state `{name}`")

    def put(self, name, value, ttl_ms=None):
        self.put_bytes(name, dumps(value), ttl_ms)

    def get_bytes(self, name):
        return _wit_state.get(_current[0], name)

    def put_bytes(self, name, value, ttl_ms=None):
        try:
            _wit_state.put(_current[0], name, value, ttl_ms)
        except _Err as e:
            raise Fail(str(e.value)) from None

    def delete(self, name):
        _wit_state.delete(_current[0], name)

    def scan(self, prefix=""):
        """(name, bytes) of every entry whose name starts with ``prefix``, in name order."""
        return _wit_state.scan(_current[0], prefix)

    def table(self, name, key):
        """The row of the pipeline's table ``name`` under ``key`` (parsed JSON), or None: the
        latest, or for a table kept ``as_of = "event-time"`` the one current at the record's
        time. ``key`` is the key field's text: a str, or a number or bool (its JSON text). The
        stage must be granted the table (``tables = [...]``): asking for another fails the
        record."""
        return _parsed(self.table_bytes(name, key), f"a row of table `{name}`")

    def table_bytes(self, name, key):
        """The row of table ``name`` under ``key`` as the bytes its topic held, or None."""
        if _wit_tables is None:
            raise Fail("window plugins read no tables")
        text = key if isinstance(key, str) else _json.dumps(key)
        return _wit_tables.get(_current[0], name, text.encode())


def _parsed(raw, what):
    """``raw`` JSON bytes parsed (None stays None); ``what`` names them when they are no JSON."""
    if raw is None:
        return None
    try:
        return _json.loads(raw)
    except ValueError as e:
        raise Fail(f"{what} is not the expected JSON: {e}") from None


# The index in the batch of the record being processed: state calls name it.
_current = [0]
_plugin = {}


def _register(kind):
    def decorate(function):
        if "kind" in _plugin:
            raise TypeError(f"a plugin has one @weir.filter, @weir.transform or @weir.window; "
                            f"`{function.__name__}` would be a second")
        _plugin["kind"] = kind
        _plugin["function"] = function
        return function
    return decorate


filter = _register("filter")  # noqa: A001 (weir's name for it)
transform = _register("transform")
window = _register("window")


class Window:
    """One window of one key: ``[start, end)`` in event-time milliseconds."""

    __slots__ = ("key", "start", "end")

    def __init__(self, key, start, end):
        self.key, self.start, self.end = key, start, end

    def __repr__(self):
        return f"Window(key={self.key!r}, start={self.start}, end={self.end})"


def config(function):
    """Mark the function that checks the configuration (a dict) and returns what stages get, or
    the class made from its fields."""
    _plugin["config"] = function
    return function


def log(level, message):
    """Write ``message`` to weir's log (``level``: trace, debug, info, warn or error)."""
    _host.log(_types.Level[level.upper()], str(message))


from weir.pointer import MISSING, Pointer  # noqa: E402 (it needs Fail)
