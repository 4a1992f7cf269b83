// CodeBeaker's warm worker for Node.js: one pre-started Node per box that runs each program in a
// fresh fork of itself (the fork server is the native addon whose path is the last argument,
// built from assets/warm/node.c), so a run never pays Node's start-up and never sees what an
// earlier run left in memory. Started as `node --single-threaded -e <this> <addon>`.
'use strict';
const addon = { exports: {} };
process.dlopen(addon, process.argv[process.argv.length - 1]);
const native = addon.exports;
const Module = require('module');

// What the snippet runner and most programs load, once before any fork: the modules behind
// console and process.stdout (whose first use costs more than a short program), the loader's
// compile path and vm.
for (const name of ['fs', 'path', 'vm', 'util', 'net', 'tty', 'stream', 'events', 'buffer']) {
  require(name);
}
new (require('net').Socket)().destroy();
new Module('[warm-up]', null)._compile('module.exports = JSON.parse(JSON.stringify([1, 2.5]));', '/[warm-up].js');
new (require('vm').Script)('void 0', { filename: '[warm-up]' }).runInThisContext();

// Only in a child: serve() never returns in the worker.
const request = JSON.parse(native.serve());
for (const [resource, soft, hard] of request.rlimits) {
  native.setrlimit(resource, soft, hard);
}
Object.defineProperty(process, 'pid', { value: native.getpid(), enumerable: true });
process.chdir(request.cwd);
for (const key of Object.keys(process.env)) {
  delete process.env[key];
}
Object.assign(process.env, request.env);
const main = request.argv[request.argv.length - 1];
process.argv = [process.execPath, main];

// Node ends a process by emitting 'exit' (after the loop ran dry, on process.exit() and after an
// uncaught exception) and then tearing itself down; a forked child must skip the teardown (it
// would wait for the platform's threads, which only the worker has), so it ends right after the
// 'exit' listeners, with the code Node would have used. Node reports an uncaught exception only
// after 'exit', so the child reports it itself, first.
const { inspect } = require('util');
const { writeSync } = require('fs');
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
// process's event loop.
Module.runMain(main);
