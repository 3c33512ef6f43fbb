"""Keep orders above a configured amount: {"min": 100}."""

import weir


@weir.config
def configure(raw):
    if not isinstance(raw.get("min"), (int, float)):
        raise weir.Fail("`min` must be a number")
    return raw["min"]


@weir.filter
def big_orders(record, min_amount):
    return record.json()["amount"] > min_amount
