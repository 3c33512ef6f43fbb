// Keep records whose JSON value matches conditions on JSON pointers: json-filter in JavaScript.
//
//     {"where": [{"path": "/amount", "op": "gt", "value": 100}], "match": "all"}
//
// Ops: eq ne gt ge lt le exists regex in. `match` is `all` (default) or `any`. A tombstone is
// kept unless `"tombstones": "drop"`. The same plugin as the Rust `json-filter`, record for record.

import { Fail, MISSING, Pointer, config, filter } from "weir";

const OPS = "eq ne gt ge lt le exists regex in";

class Condition {
  constructor(raw) {
    const unknown = Object.keys(raw).filter((k) => !["path", "op", "value"].includes(k)).sort();
    if (unknown.length) throw new Fail(`unknown field \`${unknown[0]}\` in a condition`);
    this.path = Pointer.parse(raw.path, true);
    const { op, value } = raw;
    if (!OPS.split(" ").includes(op)) throw new Fail(`unknown op \`${op}\` (expected ${OPS})`);
    if (op !== "exists" && !("value" in raw)) throw new Fail(`op \`${op}\` on \`${raw.path}\` needs a \`value\``);
    this.op = op;
    this.value = value;
    if (op === "regex") {
      if (typeof value !== "string") throw new Fail(`op \`regex\` on \`${raw.path}\` needs a string value`);
      this.value = new RegExp(value, "u");
    }
    if (op === "in" && !Array.isArray(value)) throw new Fail(`op \`in\` on \`${raw.path}\` needs an array value`);
  }

  holds(doc) {
    const found = this.path.get(doc);
    if (found === MISSING) return false;
    const { op, value } = this;
    switch (op) {
      case "exists": return true;
      case "eq": return same(found, value);
      case "ne": return !same(found, value);
      case "regex": return typeof found === "string" && value.test(found);
      case "in": return value.some((v) => same(found, v));
    }
    const order = compare(found, value);
    if (order === null) return false;
    return { gt: order > 0, ge: order >= 0, lt: order < 0, le: order <= 0 }[op];
  }
}

/** Equality of JSON values, where 1 and 1.0 are the same number. */
function same(a, b) {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => same(v, b[i]));
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && same(a[k], b[k]));
  }
  return a === b;
}

/** Numbers compare as numbers, strings as strings (by code point); anything else does not. */
function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return Math.sign(a - b);
  if (typeof a !== "string" || typeof b !== "string") return null;
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return Math.sign(d);
  }
  return Math.sign(x.length - y.length);
}

config((raw) => {
  const unknown = Object.keys(raw).filter((k) => !["where", "match", "tombstones"].includes(k)).sort();
  if (unknown.length) throw new Fail(`unknown field \`${unknown[0]}\``);
  const { match = "all", tombstones = "keep" } = raw;
  if (!["all", "any"].includes(match) || !["keep", "drop"].includes(tombstones)) {
    throw new Fail("`match` is `all` or `any`, `tombstones` is `keep` or `drop`");
  }
  if (!Array.isArray(raw.where)) throw new Fail("`where` is an array of conditions");
  return { conditions: raw.where.map((c) => new Condition(c)), all: match === "all", keepTombstones: tombstones === "keep" };
});

filter((record, { conditions, all, keepTombstones }) => {
  if (record.value === null) return keepTombstones;
  const doc = record.json();
  return all ? conditions.every((c) => c.holds(doc)) : conditions.some((c) => c.holds(doc));
});
