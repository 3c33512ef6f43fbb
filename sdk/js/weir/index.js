// Write weir plugins in JavaScript.
//
// A plugin is an ES module that hands one function to `filter` or `transform`:
//
//     import { filter } from "weir";
//
//     filter((record, config) => record.json().amount > config.min);
//
// A `filter` function says whether to keep a record; a `transform` function returns a record,
// an array of records (none, one or many) or `null`. A function takes the record, and
// optionally the configuration and the record's keyed state: `f(record)`, `f(record, config)`
// or `f(record, config, state)`. Throw `new Fail("why")` (or any error) to fail one record: the
// pipeline's error policy decides what becomes of it, and its state writes are dropped.
// `config(f)` names a function that checks the configuration once, when the plugin starts; what
// it returns is the `config` the record function gets.
//
// The batch encoding of weir's contract stays inside this package, as in the Rust and Python
// SDKs. This is the same API as the Python one, in JavaScript's spelling.

import { log as hostLog } from "weir:plugin/host@0.2.0";
import * as wit from "./state.js";
import * as tables from "./tables.js";

/** One record's failure; its message is the reason the dead-letter topic records. */
export class Fail extends Error {}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `text` (a string) as UTF-8 bytes; bytes and null as they are. */
export function bytes(value) {
  return typeof value === "string" ? encoder.encode(value) : value ?? null;
}

/**
 * A record: `key` and `value` are Uint8Arrays (or null: a value of null is a tombstone),
 * `headers` an array of `[name, Uint8Array]`, `timestamp` milliseconds since the Unix epoch.
 */
export class Record {
  constructor({ key = null, value = null, headers = [], timestamp = 0, topic = "", partition = 0, offset = 0 } = {}) {
    this.key = bytes(key);
    this.value = bytes(value);
    this.headers = headers;
    this.timestamp = timestamp;
    this.topic = topic;
    this.partition = partition;
    this.offset = offset;
  }

  /** The value parsed as JSON. */
  json() {
    if (this.value === null) throw new Fail("record has no value (tombstone)");
    return parseJson(this.value, "value");
  }

  /**
   * The value parsed as JSON by `parseExact`: slower than `json()`, for a plugin whose output
   * must keep `2.0` apart from `2`, or integers past 2^53.
   */
  jsonExact() {
    if (this.value === null) throw new Fail("record has no value (tombstone)");
    try {
      return parseExact(this.value);
    } catch (e) {
      throw new Fail(`value is not the expected JSON: ${e.message}`);
    }
  }

  /** The value as text (UTF-8). */
  text() {
    return this.value === null ? null : decoder.decode(this.value);
  }

  /** The first header called `name`, as bytes, or null. */
  header(name) {
    const found = this.headers.find(([key]) => key === name);
    return found ? found[1] : null;
  }

  /** A copy with some fields changed (`key`, `value`, `headers`, `timestamp`). */
  replace(changes) {
    const copy = new Record(this);
    for (const [name, value] of Object.entries(changes)) {
      copy[name] = name === "key" || name === "value" ? bytes(value) : value;
    }
    return copy;
  }

  /** A copy whose value is `value` written as compact JSON. */
  withJson(value) {
    return this.replace({ value: dumps(value) });
  }

  withKey(key) {
    return this.replace({ key });
  }

  /** This record as a tombstone: same key, headers and timestamp, no value. */
  withoutValue() {
    return this.replace({ value: null });
  }
}

/**
 * JSON text or bytes parsed, keeping what JavaScript's numbers lose: a number written without a
 * fraction or exponent that is past 2^53 comes back as a BigInt, and one written with them
 * (`2.0`, `1e3`) as a `Float`, so a plugin can tell `2.0` from `2` as Rust and Python plugins do.
 * Plain `JSON.parse` is faster where that does not matter.
 */
export function parseExact(text) {
  const json = typeof text === "string" ? text : decoder.decode(text);
  // Most JSON has no number `JSON.parse` would misread: then it is exact, and much faster than a
  // reviver called for every value. (A match in a string only costs the slow way.)
  if (!INEXACT.test(json)) return JSON.parse(json);
  return JSON.parse(json, (_key, value, context) => {
    if (typeof value !== "number" || !context || context.source === undefined) return value;
    if (/[.eE]/.test(context.source)) return Number.isInteger(value) ? new Float(value) : value;
    return Number.isSafeInteger(value) ? value : BigInt(context.source);
  });
}

/** What may be a float with a whole value (`2.0`, `1e3`) or an integer past 2^53. */
const INEXACT = /[0-9](?:[eE][+-]?[0-9]|\.0+(?![0-9]))|[0-9]{16}/;

/**
 * A whole number that was written as a float (`2.0`): `dumps` writes it back with its `.0`.
 * Arithmetic sees its `value` (`+float` or `float.valueOf()`).
 */
export class Float {
  constructor(value) {
    this.value = value;
  }

  valueOf() {
    return this.value;
  }

  toJSON() {
    return JSON.rawJSON(Number.isInteger(this.value) && Math.abs(this.value) < 1e16 ? `${this.value}.0` : `${this.value}`);
  }
}

function parseJson(data, what) {
  try {
    return JSON.parse(decoder.decode(data));
  } catch (e) {
    throw new Fail(`${what} is not the expected JSON: ${e.message}`);
  }
}

/** `value` as compact JSON bytes (BigInts written as integers). */
export function dumps(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    // A BigInt: the replacer (called for every value, so only here) writes it as it is.
    if (!(e instanceof TypeError)) throw e;
    text = JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v));
  }
  return encoder.encode(text);
}

/** The keyed state of the record being processed: named JSON values the host keeps. */
export class State {
  get(name) {
    return parsed(this.getBytes(name), `state \`${name}\``);
  }

  put(name, value, ttlMs) {
    this.putBytes(name, dumps(value), ttlMs);
  }

  getBytes(name) {
    return wit.get(current.index, name) ?? null;
  }

  putBytes(name, value, ttlMs) {
    try {
      wit.put(current.index, name, value, ttlMs === undefined ? undefined : BigInt(ttlMs));
    } catch (e) {
      throw new Fail(String(e.payload ?? e.message ?? e));
    }
  }

  delete(name) {
    wit.delete(current.index, name);
  }

  /** `[name, bytes]` of every entry whose name starts with `prefix`, in name order. */
  scan(prefix = "") {
    return wit.scan(current.index, prefix);
  }

  /**
   * The row of the pipeline's table `name` under `key` (parsed JSON), or null: the latest, or
   * for a table kept `as_of = "event-time"` the one current at the record's time. `key` is the
   * key field's text: a string, or a number, BigInt or boolean (its JSON text). The stage must
   * be granted the table (`tables = [...]`): asking for another fails the record.
   */
  table(name, key) {
    const text = typeof key === "string" ? key : typeof key === "bigint" ? key.toString() : JSON.stringify(key);
    return parsed(tables.get(current.index, name, encoder.encode(text)), `a row of table \`${name}\``);
  }
}

/** `raw` JSON bytes parsed exactly (none stays null); `what` names them when they are no JSON. */
function parsed(raw, what) {
  if (raw === undefined || raw === null) return null;
  try {
    return parseExact(raw);
  } catch (e) {
    throw new Fail(`${what} is not the expected JSON: ${e.message}`);
  }
}

/** What the glue shares with this module: the plugin's functions, the record being processed. */
export const plugin = {};
export const current = { index: 0 };

function register(kind) {
  return (f) => {
    if (plugin.kind) {
      throw new TypeError(`a plugin hands one function to filter(), transform() or window(); \`${f.name}\` would be a second`);
    }
    plugin.kind = kind;
    plugin.function = f;
    return f;
  };
}

/** Make `f(record, config?, state?)` the plugin's filter: it returns whether to keep a record. */
export const filter = register("filter");
/** Make `f(record, config?, state?)` the plugin's transform: a record, an array of them, or null. */
export const transform = register("transform");

/**
 * Make `Class` the plugin's window aggregation: weir assigns records to event-time windows (the
 * pipeline says which), keeps one accumulator per key and window, and fires windows on the
 * watermark. `new Class(config)` is made once; its methods are `create(window)` (a fresh
 * accumulator: anything JSON can hold), `add(acc, record)` (returns the accumulator),
 * `merge(a, b, window)` (two sessions that came to touch) and `emit(window, acc)` (a record, an
 * array of them, or null). An emitted record without a key gets the window's, and one without a
 * timestamp the window's last millisecond.
 */
export const window = register("window");

/** One window of one key: `[start, end)` in event-time milliseconds; `key` is bytes or null. */
export class Window {
  constructor(key, start, end) {
    this.key = key;
    this.start = start;
    this.end = end;
  }
}

/** Make `f(raw)` check the configuration (the pipeline's JSON) and return what stages get. */
export function config(f) {
  plugin.config = f;
  return f;
}

/** Write `message` to weir's log (`level`: trace, debug, info, warn or error). */
export function log(level, message) {
  hostLog(level, String(message));
}

export { MISSING, Pointer } from "./pointer.js";
