// A plugin that tries to reach past its sandbox: each record names what to try (`do`), and is
// kept when the attempt sees what weir grants (nothing), failed (or trapped) otherwise.

import { Fail, filter } from "weir";

const attempts = {
  // No HTTP: fetch traps, failing the record.
  fetch: () => fetch("http://127.0.0.1:9/") === null,
  // The wall clock reads the Unix epoch.
  clock: () => Date.now() === 0,
  // The monotonic clock stands still.
  monotonic: () => {
    const before = performance.now();
    let spin = 0;
    for (let i = 0; i < 100000; i++) spin += i;
    return spin > 0 && performance.now() === before;
  },
  // No timer fires within a call.
  timer: () => {
    let fired = false;
    setTimeout(() => {
      fired = true;
    }, 0);
    return !fired;
  },
  // What it logs goes to weir's log.
  console: () => {
    console.log("printed from javascript");
    console.error("and to stderr");
    return true;
  },
  // No process, environment or module loader. (Asked of the global object: the bundler would
  // put its Node.js shim in for a bare `process`.)
  environment: () => !("process" in globalThis) && !("require" in globalThis),
};

filter((record) => {
  const what = record.json().do;
  if (!attempts[what]) throw new Fail(`unknown attempt ${what}`);
  return attempts[what]();
});
