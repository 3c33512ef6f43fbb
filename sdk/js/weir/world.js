// The glue between weir's WIT contract and a plugin's function (not for plugins): the module
// `weir build` componentizes exports what this one does.

import { config as hostConfig } from "weir:plugin/host@0.2.0";
import { Fail, Record, State, current, plugin } from "./index.js";

const decoder = new TextDecoder();

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
        this.headers.push({ key: this.span(new TextEncoder().encode(key)), value: this.span(value) });
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

// What `init` made of the plugin's function: it called with one record.
let call = null;

export function init() {
  if (!plugin.function) throw "the plugin hands no function to filter() or transform()";
  const f = plugin.function;
  let config;
  try {
    config = JSON.parse(hostConfig());
    if (plugin.config) config = plugin.config(config);
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
