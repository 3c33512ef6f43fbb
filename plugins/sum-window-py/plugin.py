"""Sum one numeric field per key per window, with the count beside it: sum-window in Python.

    {"field": "/amount"}

A fired window becomes one record with the window's key and
{"key": "…", "start": …, "end": …, "count": 3, "sum": 42}. The sum stays an exact integer while
every value is one. A record without a number at `field` fails (the window is left alone). The
accumulator is the Rust `sum-window`'s, byte for byte.
"""

import weir

I64 = 2**63


def plus(a, b):
    """Integers while both are (and the sum fits in 64 bits), floats after."""
    if isinstance(a, int) and isinstance(b, int) and -I64 <= a + b < I64:
        return a + b
    return float(a) + float(b)


@weir.window
class SumWindow:
    def __init__(self, config):
        unknown = set(config) - {"field"}
        if unknown:
            raise weir.Fail(f"unknown field `{sorted(unknown)[0]}`")
        self.field = weir.Pointer.parse(config["field"])

    def create(self, window):
        return {"count": 0, "sum": 0}

    def add(self, total, record):
        n = self.field.get(record.json())
        if n is weir.MISSING:
            raise weir.Fail(f"no `{self.field}` in the record")
        if not isinstance(n, (int, float)) or isinstance(n, bool):
            raise weir.Fail(f"`{self.field}` is {weir.dumps(n).decode()}, not a number")
        return {"count": total["count"] + 1, "sum": plus(total["sum"], n)}

    def merge(self, a, b, window):
        return {"count": a["count"] + b["count"], "sum": plus(a["sum"], b["sum"])}

    def emit(self, window, total):
        key = None if window.key is None else window.key.decode(errors="replace")
        return weir.Record(value=weir.dumps({
            "key": key, "start": window.start, "end": window.end,
            "count": total["count"], "sum": total["sum"],
        }))
