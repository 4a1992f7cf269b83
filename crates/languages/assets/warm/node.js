// CodeBeaker's warm worker for Node.js: one pre-started Node per box that runs each program in a
// fresh fork of itself (the fork server is the native addon whose path is the last argument,
// built from assets/warm/node.c), so a run never pays Node's start-up and never sees what an
// earlier run left in memory. Started as `node --single-threaded -e <this> <addon>`.
//
// Everything lives in one function scope: a program sees none of the worker's names, and none of
// the globals Node gives `-e` scripts (require, module, exports, __filename, __dirname). The
// worker runs no JavaScript once it serves: each request is parsed in its own child.
'use strict';
(function codebeakerWarmWorker(load) {
  for (const name of ['require', 'module', 'exports', '__filename', '__dirname']) {
    delete globalThis[name];
  }
  const addon = { exports: {} };
  process.dlopen(addon, process.argv[process.argv.length - 1]);
  const native = addon.exports;
  const Module = load('module');

  // What the snippet runner and most programs load, once before any fork: the modules behind
  // console and process.stdout (whose first use costs more than a short program), the loader's
  // compile path and vm.
  for (const name of ['fs', 'path', 'vm', 'util', 'net', 'tty', 'stream', 'events', 'buffer']) {
    load(name);
  }
  new (load('net').Socket)().destroy();
  new Module('[warm-up]', null)._compile('module.exports = JSON.parse(JSON.stringify([1, 2.5]));', '/[warm-up].js');
  new (load('vm').Script)('void 0', { filename: '[warm-up]' }).runInThisContext();

  // Only in a child: serve() never returns in the worker. The child first becomes the run (its
  // uid and gid, no capability), then enters its directory as the run's user.
  const request = JSON.parse(native.serve());
  let main;
  try {
    native.become(request.uid, request.gid);
    for (const [resource, soft, hard] of request.rlimits) {
      native.setrlimit(resource, soft, hard);
    }
    Object.defineProperty(process, 'pid', { value: native.getpid(), enumerable: true });
    native.enter(request.cwd);
    // Node caches the working directory; a relative chdir resets that cache and follows nothing.
    process.chdir('.');
    for (const key of Object.keys(process.env)) {
      delete process.env[key];
    }
    Object.assign(process.env, request.env);
    main = request.argv[request.argv.length - 1];
    process.argv = [process.execPath, main];
  } catch (error) {
    try {
      load('fs').writeSync(2, `codebeaker: starting the run: ${error.message}\n`);
    } finally {
      native.exit(127);
    }
  }

  // Node ends a process by emitting 'exit' (after the loop ran dry, on process.exit() and after an
  // uncaught exception) and then tearing itself down; a forked child must skip the teardown (it
  // would wait for the platform's threads, which only the worker has), so it ends right after the
  // 'exit' listeners, with the code Node would have used. Node reports an uncaught exception only
  // after 'exit', so the child reports it itself, first.
  const { inspect } = load('util');
  const { writeSync } = load('fs');
  let fatal = null;
  process.on('uncaughtExceptionMonitor', (error) => {
    const handled = process.listenerCount('uncaughtException') > 0 ||
      process.hasUncaughtExceptionCaptureCallback();
    if (!handled) {
      fatal = { error };
    }
  });
  function report(text) {
    try {
      writeSync(2, text + '\n');
    } catch (_) { /* stderr is gone: nothing more to say */ }
  }
  const emit = process.emit;
  process.emit = function codebeakerEmit(event, ...args) {
    if (event !== 'exit') {
      return emit.call(this, event, ...args);
    }
    let code = typeof args[0] === 'number' ? args[0] : process.exitCode || 0;
    if (fatal !== null) {
      report(inspect(fatal.error) + '\n\nNode.js ' + process.version);
    }
    try {
      emit.call(this, event, ...args);
    } catch (error) {
      report(inspect(error));
      code = code || 1;
    }
    native.exit(code);
  };

  // As `node main` would: the program becomes the main module, and its pending work runs in this
  // process's event loop. A `.js` file with no package.json above it (where `"type"` could make it
  // an ES module) is always CommonJS: it is loaded directly, which skips a millisecond of the
  // entry point's resolution; anything else takes Node's own path.
  const path = load('path');
  const { existsSync, readFileSync } = load('fs');
  function commonJs(file) {
    if (!file.endsWith('.js') || !path.isAbsolute(file)) {
      return false;
    }
    for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
      if (existsSync(path.join(dir, 'package.json'))) {
        return false;
      }
      if (dir === path.dirname(dir)) {
        return true;
      }
    }
  }
  if (commonJs(main)) {
    const program = new Module(main, null);
    program.id = '.';
    program.filename = main;
    program.paths = Module._nodeModulePaths(path.dirname(main));
    process.mainModule = program;
    Module._cache[main] = program;
    program._compile(readFileSync(main, 'utf8'), main);
    program.loaded = true;
  } else {
    Module.runMain(main);
  }
})(require);
