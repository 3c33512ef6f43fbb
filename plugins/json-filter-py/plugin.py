"""Keep records whose JSON value matches conditions on JSON pointers: json-filter in Python.

    {"where": [{"path": "/amount", "op": "gt", "value": 100}], "match": "all"}

Ops: eq ne gt ge lt le exists regex in. `match` is `all` (default) or `any`. A tombstone is kept
unless `"tombstones": "drop"`. The same plugin as the Rust `json-filter`, record for record.
"""

import re

import weir
from weir import MISSING, Pointer

OPS = "eq ne gt ge lt le exists regex in"


class Condition:
    def __init__(self, raw):
        unknown = set(raw) - {"path", "op", "value"}
        if unknown:
            raise weir.Fail(f"unknown field `{sorted(unknown)[0]}` in a condition")
        self.path = Pointer.parse(raw["path"], root_ok=True)
        op = raw["op"]
        if op not in OPS.split():
            raise weir.Fail(f"unknown op `{op}` (expected {OPS})")
        if op != "exists" and "value" not in raw:
            raise weir.Fail(f"op `{op}` on `{raw['path']}` needs a `value`")
        self.op, self.value = op, raw.get("value")
        if op == "regex":
            if not isinstance(self.value, str):
                raise weir.Fail(f"op `regex` on `{raw['path']}` needs a string value")
            self.value = re.compile(self.value)
        if op == "in" and not isinstance(self.value, list):
            raise weir.Fail(f"op `in` on `{raw['path']}` needs an array value")

    def holds(self, doc):
        found = self.path.get(doc)
        if found is MISSING:
            return False
        op, value = self.op, self.value
        if op == "exists":
            return True
        if op == "eq":
            return same(found, value)
        if op == "ne":
            return not same(found, value)
        if op == "regex":
            return isinstance(found, str) and value.search(found) is not None
        if op == "in":
            return any(same(found, v) for v in value)
        order = compare(found, value)
        if order is None:
            return False
        return {"gt": order > 0, "ge": order >= 0, "lt": order < 0, "le": order <= 0}[op]


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same(a, b):
    """Equality where 1 and 1.0 are the same number (and true is not 1)."""
    if number(a) and number(b):
        return float(a) == float(b)
    if number(a) or number(b) or isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def compare(a, b):
    """Numbers compare as numbers, strings as strings; anything else does not compare."""
    if number(a) and number(b):
        a, b = float(a), float(b)
    elif not (isinstance(a, str) and isinstance(b, str)):
        return None
    return (a > b) - (a < b)


@weir.config
def configure(raw):
    unknown = set(raw) - {"where", "match", "tombstones"}
    if unknown:
        raise weir.Fail(f"unknown field `{sorted(unknown)[0]}`")
    mode = raw.get("match", "all")
    tombstones = raw.get("tombstones", "keep")
    if mode not in ("all", "any") or tombstones not in ("keep", "drop"):
        raise weir.Fail("`match` is `all` or `any`, `tombstones` is `keep` or `drop`")
    return ([Condition(c) for c in raw["where"]], all if mode == "all" else any,
            tombstones == "keep")


@weir.filter
def json_filter(record, config):
    conditions, mode, keep_tombstones = config
    if record.value is None:
        return keep_tombstones
    doc = record.json()
    return mode(c.holds(doc) for c in conditions)
