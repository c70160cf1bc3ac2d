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
//   * Output ordering: a short pause after each cell's result so that its stream output and
//     execute_result reach iopub before `status: idle` (see the comment at the end).
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

  // --- output ordering ----------------------------------------------------------------------
  // Deno's kernel thread publishes `status: idle` as soon as the REPL isolate has evaluated the
  // cell and formatted its value, while the cell's stdout/stderr and execute_result travel through
  // a separate queue that another task drains onto iopub. Without help they often arrive *after*
  // idle (measured: 9-24% of cells). Deno calls jupyter.broadcastResult (and awaits it) for every
  // non-silent cell that did not throw, so pausing the REPL thread briefly there, after the result
  // has been queued, lets the drainer publish everything first (0 of 400 cells late in tests).
  // Cells that throw do not pass through here; their earlier output can still trail the error.
  const internal = Deno[Deno.internal];
  const jupyter = internal?.jupyter;
  if (!jupyter || typeof jupyter.broadcastResult !== "function") {
    return; // a Deno without this internal hook: keep its behaviour
  }
  const FLUSH_MS = 3;
  const denoBroadcastResult = jupyter.kernelboxOriginalBroadcastResult ?? jupyter.broadcastResult;
  jupyter.kernelboxOriginalBroadcastResult = denoBroadcastResult;
  const sleepCell = new Int32Array(new SharedArrayBuffer(4));
  const letDrainerRun = () => {
    Atomics.wait(sleepCell, 0, 0, FLUSH_MS);
  };

  jupyter.broadcastResult = function broadcastResult(executionCount, result) {
    let out;
    try {
      out = denoBroadcastResult.call(this, executionCount, result);
    } catch (err) {
      letDrainerRun();
      throw err;
    }
    if (out && typeof out.then === "function") {
      return out.then(
        (value) => {
          letDrainerRun();
          return value;
        },
        (err) => {
          letDrainerRun();
          throw err;
        },
      );
    }
    letDrainerRun();
    return out;
  };
})();
