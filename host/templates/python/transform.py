"""Add a field to every JSON record, and count records per key in state:
{"field": "source", "value": "weir"}."""

import weir


@weir.transform
def tag(record, config, state):
    seen = (state.get("seen") or 0) + 1
    state.put("seen", seen)
    doc = record.json()
    if not isinstance(doc, dict):
        raise weir.Fail("expected a JSON object")
    doc[config["field"]] = config["value"]
    doc["seen"] = seen
    return record.with_json(doc)
