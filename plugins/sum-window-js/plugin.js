// Sum one numeric field per key per window, with the count beside it: sum-window in JavaScript.
//
//     {"field": "/amount"}
//
// A fired window becomes one record with the window's key and
// {"key": "…", "start": …, "end": …, "count": 3, "sum": 42}. The sum stays an exact integer while
// every value is one (records are read with `jsonExact`, which tells `2.0` from `2`). A record
// without a number at `field` fails (the window is left alone). The accumulator is the Rust
// `sum-window`'s, byte for byte.

import { Fail, Float, MISSING, Pointer, Record, dumps, window } from "weir";

const I64 = 2n ** 63n;
const decoder = new TextDecoder();

const isInteger = (n) => typeof n === "bigint" || (typeof n === "number" && Number.isInteger(n));

/** Integers while both are (and the sum fits in 64 bits), floats after. */
function plus(a, b) {
  if (isInteger(a) && isInteger(b)) {
    const sum = BigInt(a) + BigInt(b);
    if (-I64 <= sum && sum < I64) return Number.isSafeInteger(Number(sum)) ? Number(sum) : sum;
  }
  const sum = Number(a) + Number(b);
  return Number.isInteger(sum) ? new Float(sum) : sum;
}

window(
  class SumWindow {
    constructor(config) {
      const unknown = Object.keys(config).filter((k) => k !== "field").sort();
      if (unknown.length) throw new Fail(`unknown field \`${unknown[0]}\``);
      this.field = Pointer.parse(config.field);
    }

    create() {
      return { count: 0, sum: 0 };
    }

    add(total, record) {
      const n = this.field.get(record.jsonExact());
      if (n === MISSING) throw new Fail(`no \`${this.field}\` in the record`);
      if (!(typeof n === "number" || typeof n === "bigint" || n instanceof Float)) {
        throw new Fail(`\`${this.field}\` is ${decoder.decode(dumps(n))}, not a number`);
      }
      return { count: total.count + 1, sum: plus(total.sum, n) };
    }

    merge(a, b) {
      return { count: a.count + b.count, sum: plus(a.sum, b.sum) };
    }

    emit(window, total) {
      const key = window.key === null ? null : decoder.decode(window.key);
      const { start, end } = window;
      return new Record({ value: dumps({ key, start, end, count: total.count, sum: total.sum }) });
    }
  },
);
