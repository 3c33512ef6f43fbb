// JSON pointers (RFC 6901), as the Rust SDK's `json::Pointer`.

import { Fail } from "./index.js";

/** What `Pointer.get` returns where nothing is. */
export const MISSING = Symbol("missing");

export class Pointer {
  constructor(text, tokens) {
    this.text = text;
    this.tokens = tokens;
  }

  /** `text` as a pointer; `""` (the whole document) only where `rootOk`. */
  static parse(text, rootOk = false) {
    if (text === "" && rootOk) return new Pointer(text, []);
    if (typeof text !== "string" || !text.startsWith("/")) {
      throw new Fail(`path \`${text}\` is not a JSON pointer (it must start with \`/\`)`);
    }
    const tokens = text.slice(1).split("/").map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
    return new Pointer(text, tokens);
  }

  /** The value at this pointer in `doc`, or `MISSING`. */
  get(doc) {
    let at = doc;
    for (const token of this.tokens) {
      if (isObject(at)) {
        if (!Object.hasOwn(at, token)) return MISSING;
        at = at[token];
      } else if (Array.isArray(at) && /^(0|[1-9][0-9]*)$/.test(token)) {
        const index = Number(token);
        if (index >= at.length) return MISSING;
        at = at[index];
      } else {
        return MISSING;
      }
    }
    return at;
  }

  /** Put `value` at this pointer in `doc`, making missing parent objects. */
  put(doc, value) {
    let at = doc;
    this.tokens.forEach((token, i) => {
      if (!isObject(at)) throw new Fail(`cannot put at ${this.text}: a parent is not an object`);
      if (i === this.tokens.length - 1) {
        at[token] = value;
      } else {
        if (!Object.hasOwn(at, token)) at[token] = {};
        at = at[token];
      }
    });
  }

  toString() {
    return this.text;
  }
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && v.constructor === Object;
}
