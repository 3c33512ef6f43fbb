// Count records per key per window.

import { Record, dumps, window } from "weir";

const decoder = new TextDecoder();

window(
  class Count {
    create() {
      return 0;
    }

    add(count) {
      return count + 1;
    }

    merge(a, b) {
      return a + b;
    }

    emit(window, count) {
      const key = window.key === null ? null : decoder.decode(window.key);
      return new Record({ value: dumps({ key, start: window.start, end: window.end, count }) });
    }
  },
);
