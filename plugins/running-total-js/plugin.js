// A per-key running count and sum of one numeric field: running-total in JavaScript.
//
//     {"field": "/amount"}
//
// emits, with the record's key, headers and timestamp, {"count": 3, "sum": 42}; with
// "into": "/totals" it emits the record itself with the totals put there. The sum stays an exact
// integer while every value is one (JavaScript's numbers are floats: the record is read with
// `jsonExact`, which tells `2.0` from `2` and keeps integers past 2^53). A record without a
// number at `field` fails (the totals are left alone); a tombstone forgets the key's totals and
// passes through. The state is the Rust `running-total`'s, byte for byte, so any build can take
// over from another.

import { Fail, Float, Pointer, config, transform } from "weir";

const I64 = 2n ** 63n;

config((raw) => {
  const unknown = Object.keys(raw).filter((k) => !["field", "into"].includes(k)).sort();
  if (unknown.length) throw new Fail(`unknown field \`${unknown[0]}\``);
  const into = raw.into === undefined || raw.into === null ? null : Pointer.parse(raw.into);
  return { field: Pointer.parse(raw.field), into };
});

/** Whether `n` was written as an integer. */
const isInteger = (n) => typeof n === "bigint" || (typeof n === "number" && Number.isInteger(n));

/** Integers while every value is one (and the sum fits in 64 bits), floats after. */
function add(total, n) {
  if (isInteger(total) && isInteger(n)) {
    const sum = BigInt(total) + BigInt(n);
    if (-I64 <= sum && sum < I64) return Number.isSafeInteger(Number(sum)) ? Number(sum) : sum;
  }
  const sum = Number(total) + Number(n);
  return Number.isInteger(sum) ? new Float(sum) : sum;
}

transform((record, { field, into }, state) => {
  if (record.value === null) {
    state.delete("totals");
    return record;
  }
  const value = record.jsonExact();
  const n = field.get(value);
  if (!(typeof n === "number" || typeof n === "bigint" || n instanceof Float)) throw new Fail(`no number at ${field}`);
  const totals = state.get("totals") ?? { count: 0, sum: 0 };
  const next = { count: totals.count + 1, sum: add(totals.sum, n) };
  state.put("totals", next);
  if (into === null) return record.withJson(next);
  try {
    into.put(value, next);
  } catch {
    throw new Fail(`cannot put totals at ${into}: a parent is not an object`);
  }
  return record.withJson(value);
});
