"""Each order with its customer's country, from the pipeline's `customers` table (none when the
customer has no row); `{"table": "other"}` asks another table instead."""

import weir


@weir.transform
def join(record, config, state):
    order = record.json()
    customer = state.table(config.get("table", "customers"), order["customer"])
    order["country"] = customer["country"] if customer else None
    return record.with_json(order)
