// Each order with its customer's country, from the pipeline's `customers` table (null when the
// customer has no row); `{"table": "other"}` asks another table instead.

import { transform } from "weir";

transform(function join(record, config, state) {
  const order = record.json();
  const customer = state.table(config.table ?? "customers", order.customer);
  order.country = customer ? customer.country : null;
  return record.withJson(order);
});
