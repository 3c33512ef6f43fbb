// Add a field to every JSON record, and count records per key in state:
// {"field": "source", "value": "weir"}.

import { Fail, transform } from "weir";

transform((record, config, state) => {
  const seen = (state.get("seen") ?? 0) + 1;
  state.put("seen", seen);
  const doc = record.json();
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new Fail("expected a JSON object");
  doc[config.field] = config.value;
  doc.seen = seen;
  return record.withJson(doc);
});
