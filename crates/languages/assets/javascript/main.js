'use strict';
// CodeBeaker snippet runner for JavaScript. The user's code is in snippet.js next to this file and
// runs as a classic script in this realm (console, timers, Buffer and process work as usual); the
// runner's own names live in this module's scope, which the script cannot see.
(function codebeakerSnippet() {
  const fs = require('fs');
  const path = require('path');
  const vm = require('vm');

  function report(error) {
    let text;
    if (error && typeof error.stack === 'string') {
      // vm already prefixed the stack with the offending snippet line; drop the runner's frames.
      text = error.stack
        .split('\n')
        .filter((line) => !/^\s+at /.test(line) || !(line.includes('node:') || line.includes(__filename)))
        .join('\n');
    } else {
      text = 'Uncaught ' + String(error);
    }
    process.stderr.write(text + '\n');
    process.exitCode = 1;
  }

  function writeAll(fd, buffer) {
    let offset = 0;
    while (offset < buffer.length) {
      try {
        offset += fs.writeSync(fd, buffer, offset);
      } catch (error) {
        if (error.code !== 'EAGAIN') throw error;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
    }
  }

  function finish(value) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch (error) {
      process.stderr.write('codebeaker: `result` is not JSON-serializable: ' + error.message + '\n');
      process.exitCode = 1;
      return;
    }
    if (text === undefined) {
      process.stderr.write('codebeaker: `result` is not JSON-serializable (it is ' + typeof value + ')\n');
      process.exitCode = 1;
      return;
    }
    writeAll(4, Buffer.from(text, 'utf8'));
    fs.closeSync(4);
  }

  let raw;
  try {
    raw = fs.readFileSync(3, 'utf8');
  } finally {
    try { fs.closeSync(3); } catch (_) { /* already closed */ }
  }
  let input = null;
  if (raw.trim() !== '') {
    try {
      input = JSON.parse(raw);
    } catch (error) {
      process.stderr.write('codebeaker: the snippet input is not valid JSON: ' + error.message + '\n');
      process.exitCode = 1;
      return;
    }
  }
  const code = fs.readFileSync(path.join(__dirname, 'snippet.js'), 'utf8');
  globalThis.input_data = input;
  // `require('./x')` in a snippet resolves in the working directory (the workspace), as in a
  // program that lives there.
  globalThis.require = require('module').createRequire(path.join(process.cwd(), 'snippet.js'));

  try {
    new vm.Script(code, { filename: 'snippet.js' }).runInThisContext();
  } catch (error) {
    report(error);
    return;
  }
  const state = vm.runInThisContext(
    '(function () { try { return typeof result === "undefined" ? [false] : [true, result]; } catch (e) { return [false]; } })()'
  );
  if (!state[0]) {
    process.stderr.write('snippet did not set `result`\n');
    process.exitCode = 1;
    return;
  }
  const value = state[1];
  if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
    Promise.resolve(value).then(finish, report);
  } else {
    finish(value);
  }
})();
