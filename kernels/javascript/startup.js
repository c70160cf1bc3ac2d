// kernelbox prelude for the Deno Jupyter kernel (kernels/javascript).
//
// kernelbox runs this file as a silent execute_request (silent: true, store_history: false) right
// after every kernel start or restart, before any user code; an `error` reply fails the start.
// It must stay idempotent and must not print anything.
//
// What it adds on top of `deno jupyter`:
//   * globalThis.require: Node's CommonJS require, resolved from the *current* working directory
//     at every call (so `process.chdir(dir)` after `npm install x` in dir makes `require('x')`
//     work), plus require.resolve / require.cache. Builtins work too: require('fs'), require('node:path').
//   * Interrupting a cell that awaits (see "interrupts" below): on SIGUSR2 from the agent, every
//     pending promise made with `new Promise` and every `fetch` rejects with an AbortError.
//   * End of output: a marker after each cell's last output, so the agent knows when a cell's
//     output has all arrived (see the comment at the end).
//
// process, process.env (read/write), process.chdir, top-level await, TypeScript and the last
// expression's value are native to Deno's kernel and need nothing here.

await (async () => {
  const { createRequire } = await import("node:module");
  const nodePath = await import("node:path");

  // --- require ------------------------------------------------------------------------------
  const requireFromCwd = () => createRequire(nodePath.join(process.cwd(), "[kernelbox-cell].js"));

  const kernelboxRequire = function require(id) {
    return requireFromCwd()(id);
  };
  kernelboxRequire.resolve = function resolve(id, options) {
    return requireFromCwd().resolve(id, options);
  };
  kernelboxRequire.resolve.paths = function paths(id) {
    return requireFromCwd().resolve.paths(id);
  };
  Object.defineProperty(kernelboxRequire, "cache", {
    get: () => requireFromCwd().cache,
    enumerable: true,
  });
  Object.defineProperty(kernelboxRequire, "main", { value: undefined, enumerable: true });

  Object.defineProperty(globalThis, "require", {
    value: kernelboxRequire,
    writable: true,
    configurable: true,
    enumerable: false,
  });

  // --- interrupts ---------------------------------------------------------------------------
  // Deno's own interrupt (interrupt_request) terminates *running* JavaScript. A cell that awaits
  // runs nothing, so the termination lands on whatever runs next (the timer that would have
  // settled the await) and the cell never ends. An await can only end if what it awaits
  // settles, so kernelbox makes the usual things a cell awaits rejectable: promises built with
  // the global `Promise` constructor (timers wrapped in a promise, hand-made deferreds, promises
  // that never settle) and `fetch`. The agent sends SIGUSR2 first (kernel.json:
  // metadata.kernelbox.interrupt_signal); the listener runs on the event loop, which is free
  // while the cell awaits, and rejects everything pending with an AbortError, the web platform's
  // cancellation error: the await throws, the cell ends, and the context keeps its state. A cell
  // that is busy instead (a loop that never yields) does not let the listener run; the agent
  // then follows with interrupt_request, and a cell that ends neither way is restarted.
  // What this cannot reach (a native promise such as `Deno.readFile`'s) ends in that restart.
  // Scope: the listener rejects every pending promise it knows, including ones of background
  // work started by earlier cells; it only fires while the agent runs a cell.
  const interruptsKey = Symbol.for("kernelbox.interrupts");
  if (!globalThis[interruptsKey]) {
    const pending = new Set();
    Object.defineProperty(globalThis, interruptsKey, { value: pending });
    // A promise that is never settled stays listed; past this many the oldest are forgotten
    // (they can then only be ended by the restart fallback).
    const MAX_PENDING = 10000;
    const track = (entry) => {
      if (pending.size >= MAX_PENDING) pending.delete(pending.values().next().value);
      pending.add(entry);
    };
    const NativePromise = globalThis.Promise;
    const construct = (target, args, newTarget) => {
      const [executor] = args;
      if (typeof executor !== "function") {
        return Reflect.construct(target, args, newTarget);
      }
      return Reflect.construct(target, [(resolve, reject) => {
        const entry = { abort: reject };
        track(entry);
        const settle = (fn) => (value) => {
          pending.delete(entry);
          fn(value);
        };
        try {
          return executor(settle(resolve), settle(reject));
        } catch (err) {
          pending.delete(entry);
          throw err;
        }
      }], newTarget);
    };
    globalThis.Promise = new Proxy(NativePromise, { construct });

    const nativeFetch = globalThis.fetch;
    globalThis.fetch = function fetch(input, init) {
      const controller = new AbortController();
      const entry = { abort: (reason) => controller.abort(reason) };
      const own = controller.signal;
      const theirs = init?.signal ?? (input instanceof Request ? input.signal : undefined);
      const signal = theirs ? AbortSignal.any([theirs, own]) : own;
      track(entry);
      // Our own promise (not a handler on fetch's) so an unhandled rejection is still reported.
      return new NativePromise((resolve, reject) => {
        nativeFetch(input, { ...init, signal }).then(
          (response) => {
            pending.delete(entry);
            resolve(response);
          },
          (err) => {
            pending.delete(entry);
            reject(err);
          },
        );
      });
    };

    Deno.addSignalListener("SIGUSR2", () => {
      const error = new DOMException("The execution was interrupted", "AbortError");
      Object.defineProperty(error, "stack", {
        value: "AbortError: The execution was interrupted",
        configurable: true,
      });
      const entries = [...pending];
      pending.clear();
      for (const entry of entries) entry.abort(error);
    });
  }

  // --- end of output -----------------------------------------------------------------------
  // Deno's kernel thread publishes `status: idle` as soon as the REPL isolate has evaluated the
  // cell and formatted its value, while the cell's stdout/stderr travel through a separate queue
  // that another task drains onto iopub: a large output can still be draining seconds after idle.
  // Deno calls jupyter.broadcastResult (and awaits it) for every non-silent cell that did not
  // throw, after all of the cell's output was queued, so the prelude prints a marker there, into
  // the same queue: when the agent sees it (kernel.json: metadata.kernelbox.output_marker, which
  // the agent strips), every line before it has arrived. Cells that throw do not pass through
  // here; for them the agent falls back to a short quiet period.
  const internal = Deno[Deno.internal];
  const jupyter = internal?.jupyter;
  if (!jupyter || typeof jupyter.broadcastResult !== "function") {
    return; // a Deno without this internal hook: keep its behaviour
  }
  const OUTPUT_COMPLETE = "\u0000kernelbox-output-complete\u0000";
  // The console as it is now: user code that replaces console.log must not swallow the marker.
  const log = console.log.bind(console);
  const markComplete = () => log(OUTPUT_COMPLETE);
  const denoBroadcastResult = jupyter.kernelboxOriginalBroadcastResult ?? jupyter.broadcastResult;
  jupyter.kernelboxOriginalBroadcastResult = denoBroadcastResult;

  jupyter.broadcastResult = function broadcastResult(executionCount, result) {
    let out;
    try {
      out = denoBroadcastResult.call(this, executionCount, result);
    } catch (err) {
      markComplete();
      throw err;
    }
    // After the result itself went out, so the marker also follows the execute_result.
    return (async () => {
      try {
        return await out;
      } finally {
        markComplete();
      }
    })();
  };
})();
