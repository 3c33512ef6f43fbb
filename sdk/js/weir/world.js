// The glue between weir's WIT contract and a plugin's function (not for plugins): the module
// `weir build` componentizes exports what this one does.

import { config as hostConfig } from "weir:plugin/host@0.2.0";
import { Fail, Record, State, Window, current, dumps, parseExact, plugin } from "./index.js";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function message(error) {
  if (error instanceof Fail) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function records(batch) {
  const { arena, topics, headers: refs } = batch;
  const slice = (span) => arena.slice(span.start, span.start + span.len);
  return batch.events.map((e) => {
    const headers = refs
      .slice(e.headers.start, e.headers.start + e.headers.len)
      .map((r) => [decoder.decode(slice(r.key)), slice(r.value)]);
    return new Record({
      key: e.key === undefined || e.key === null ? null : slice(e.key),
      value: e.value === undefined || e.value === null ? null : slice(e.value),
      headers,
      timestamp: Number(e.timestamp),
      topic: topics[e.topic],
      partition: e.partition,
      offset: Number(e.offset),
    });
  });
}

function equalBytes(a, b) {
  if (a === b) return true;
  if (a === null || b === null || a.length !== b.length) return false;
  return a.every((byte, i) => byte === b[i]);
}

function equalHeaders(a, b) {
  return a === b || (a.length === b.length && a.every(([k, v], i) => k === b[i][0] && equalBytes(v, b[i][1])));
}

/** An out-batch being written. */
class Out {
  constructor() {
    this.chunks = [];
    this.size = 0;
    this.headers = [];
    this.outputs = [];
  }

  span(data) {
    const span = { start: this.size, len: data.length };
    this.chunks.push(data);
    this.size += data.length;
    return span;
  }

  part(next, before) {
    if (equalBytes(next, before)) return { tag: "same" };
    if (next === null) return { tag: "absent" };
    return { tag: "bytes", val: this.span(next) };
  }

  add(index, record, out) {
    if (!(out instanceof Record)) {
      throw new Fail(`a transform returns Records (or an array of them, or null), not ${typeof out}`);
    }
    let headers;
    if (!equalHeaders(out.headers, record.headers)) {
      const start = this.headers.length;
      for (const [key, value] of out.headers) {
        this.headers.push({ key: this.span(encoder.encode(key)), value: this.span(value) });
      }
      headers = { start, len: out.headers.length };
    }
    this.outputs.push({
      input: index,
      key: this.part(out.key, record.key),
      value: this.part(out.value, record.value),
      headers,
      timestamp: BigInt(out.timestamp),
    });
  }

  arena() {
    const arena = new Uint8Array(this.size);
    let at = 0;
    for (const chunk of this.chunks) {
      arena.set(chunk, at);
      at += chunk.length;
    }
    return arena;
  }
}

// What `init` made of the plugin's function: it called with one record, or the instance of
// its window class.
let call = null;
let aggregate = null;

export function init() {
  if (!plugin.function) throw "the plugin hands nothing to filter(), transform() or window()";
  const f = plugin.function;
  let config;
  try {
    config = JSON.parse(hostConfig());
    if (plugin.config) config = plugin.config(config);
    if (plugin.kind === "window") {
      aggregate = new f(config);
      return;
    }
  } catch (e) {
    throw `bad config: ${message(e)}`;
  }
  const extra = [config, new State()].slice(0, Math.max(f.length - 1, 0));
  call = (record) => f(record, ...extra);
}

export function filter(batch) {
  const keep = [];
  const errors = [];
  records(batch).forEach((record, i) => {
    current.index = i;
    try {
      keep.push(Boolean(call(record)));
    } catch (e) {
      keep.push(false);
      errors.push([i, message(e)]);
    }
  });
  return { keep, errors };
}

export function transform(batch) {
  const out = new Out();
  const errors = [];
  records(batch).forEach((record, i) => {
    current.index = i;
    const mark = [out.outputs.length, out.headers.length, out.chunks.length, out.size];
    try {
      const result = call(record);
      if (result === null || result === undefined) return;
      for (const one of Array.isArray(result) ? result : [result]) out.add(i, record, one);
    } catch (e) {
      // Outputs of a record that failed part way are taken back.
      [out.outputs.length, out.headers.length, out.chunks.length, out.size] = mark;
      errors.push([i, message(e)]);
    }
  });
  return { arena: out.arena(), headers: out.headers, outputs: out.outputs, errors };
}

function toWindow(w) {
  return new Window(w.key ?? null, Number(w.start), Number(w.end));
}

function decode(acc) {
  try {
    return parseExact(acc);
  } catch (e) {
    throw new Fail(`stored accumulator does not decode: ${e.message}`);
  }
}

function encode(acc) {
  try {
    return dumps(acc);
  } catch (e) {
    throw new Fail(`accumulator does not encode: ${e.message}`);
  }
}

function eventRecord(e) {
  return new Record({
    key: e.key ?? null,
    value: e.value ?? null,
    headers: e.headers.map((h) => [h.key, h.value]),
    timestamp: Number(e.timestamp),
    topic: e.topic,
    partition: e.partition,
    offset: Number(e.offset),
  });
}

/** A pane's accumulator after its events, and the events that failed, by index. */
function fold(window, acc, events) {
  let value = acc === undefined || acc === null ? aggregate.create(window) : decode(acc);
  const errors = [];
  events.forEach((event, i) => {
    try {
      const next = aggregate.add(value, eventRecord(event));
      if (next !== undefined) value = next; // `add` may change the accumulator in place
    } catch (e) {
      errors.push([i, message(e)]);
    }
  });
  return { acc: encode(value), errors };
}

/** Results as the contract's `result` values: what `f` returns, or why it threw. */
function each(items, f) {
  return items.map((item) => {
    try {
      return { tag: "ok", val: f(item) };
    } catch (e) {
      return { tag: "err", val: message(e) };
    }
  });
}

export function accumulate(panes) {
  return each(panes, (pane) => fold(toWindow(pane.window), pane.acc, pane.events));
}

export function merge(window, a, b) {
  try {
    return encode(aggregate.merge(decode(a), decode(b), toWindow(window)));
  } catch (e) {
    throw message(e);
  }
}

export function emit(fired) {
  return each(fired, ([w, acc]) => {
    const window = toWindow(w);
    const result = aggregate.emit(window, decode(acc));
    const records = result === null || result === undefined ? [] : Array.isArray(result) ? result : [result];
    return records.map((r) => ({
      key: r.key ?? w.key,
      value: r.value ?? undefined,
      headers: r.headers.map(([key, value]) => ({ key, value })),
      timestamp: BigInt(r.timestamp === 0 ? window.end - 1 : r.timestamp),
    }));
  });
}
