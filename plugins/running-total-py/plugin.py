"""A per-key running count and sum of one numeric field: running-total in Python.

    {"field": "/amount"}

emits, with the record's key, headers and timestamp, {"count": 3, "sum": 42}; with
"into": "/totals" it emits the record itself with the totals put there. The sum stays an exact
integer while every value is one. A record without a number at `field` fails (the totals are
left alone); a tombstone forgets the key's totals and passes through. The state is the Rust
`running-total`'s, byte for byte, so either build can take over from the other.
"""

import weir

I64 = 2**63


@weir.config
def configure(raw):
    unknown = set(raw) - {"field", "into"}
    if unknown:
        raise weir.Fail(f"unknown field `{sorted(unknown)[0]}`")
    into = raw.get("into")
    return weir.Pointer.parse(raw["field"]), None if into is None else weir.Pointer.parse(into)


def add(total, n):
    """Integers while every value is one (and the sum fits in 64 bits), floats after."""
    if isinstance(total, int) and isinstance(n, int) and -I64 <= total + n < I64:
        return total + n
    return float(total) + float(n)


@weir.transform
def running_total(record, config, state):
    field, into = config
    if record.value is None:
        state.delete("totals")
        return record
    value = record.json()
    n = field.get(value)
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        raise weir.Fail(f"no number at {field}")
    totals = state.get("totals") or {"count": 0, "sum": 0}
    totals = {"count": totals["count"] + 1, "sum": add(totals["sum"], n)}
    state.put("totals", totals)
    if into is None:
        return record.with_json(totals)
    try:
        into.put(value, totals)
    except weir.Fail:
        raise weir.Fail(f"cannot put totals at {into}: a parent is not an object") from None
    return record.with_json(value)
