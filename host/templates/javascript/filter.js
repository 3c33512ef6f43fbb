// Keep orders above a configured amount: {"min": 100}.

import { Fail, config, filter } from "weir";

config((raw) => {
  if (typeof raw.min !== "number") throw new Fail("`min` must be a number");
  return raw.min;
});

filter((record, min) => record.json().amount > min);
