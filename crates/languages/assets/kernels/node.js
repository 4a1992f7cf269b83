// CodeBeaker's kernel for a JavaScript context: one Node.js process whose cells run in one `vm`
// context, driven by the Python kernel's relay (assets/kernels/python.py, `--relay javascript`).
//
// Protocol: the relay writes one JSON line {"code": "..."} per cell to the descriptor named by
// the first argument; the kernel runs the cell and writes one JSON line {"results": [{"data":
// {mime: value}, "main": bool}], "error": {"name", "value", "traceback"} or null} to the
// descriptor named by the second. What the cell prints goes to the process's stdout and stderr,
// which the relay forwards (pipes are written synchronously on Linux, so it is all there before
// the result line).
//
// Top-level declarations persist across cells (scripts of one vm context share its lexical
// scope); a cell that uses top-level `await` runs as an async function, with its top-level
// `let`/`const`/`var x =` kept as globals and its last line as its value. SIGINT interrupts a
// running cell (breakOnSigint) and is ignored between cells.
'use strict';
const fs = require('fs');
const util = require('util');
const vm = require('vm');

const [cellFd, resultFd] = process.argv.slice(-2).map(Number);

const sandbox = {
  console, require, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate,
  queueMicrotask, structuredClone, AbortController, performance,
  module: { exports: {} },
};
sandbox.global = sandbox;
sandbox.globalThis = sandbox;
if (typeof fetch === 'function') sandbox.fetch = fetch;
const context = vm.createContext(sandbox);

let interrupt = null;
process.on('SIGINT', () => {
  if (interrupt) interrupt(new Error('Interrupted: the cell was stopped (SIGINT)'));
});

function bundle(value) {
  const data = { 'text/plain': util.inspect(value, { depth: 4 }) };
  if (value !== null && typeof value === 'object') {
    try {
      JSON.stringify(value);
      data['application/json'] = JSON.parse(JSON.stringify(value));
    } catch (_) { /* not JSON */ }
  }
  return data;
}

function errorOf(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
    return { name: String(e.name || 'Error'), value: String(e.message || ''), traceback: String(e.stack || '') };
  }
  return { name: 'Error', value: util.inspect(e), traceback: '' };
}

// A cell with top-level await, as an async function: its declarations become globals, its last
// line its value.
function asAsync(code) {
  const lines = code.replace(/\s+$/, '').split('\n');
  const kept = lines.map((l) => l.replace(/^(let|const|var)\s+([A-Za-z_$][\w$]*)\s*=/, '$2 ='));
  const last = kept.length - 1;
  const tail = kept[last].trim();
  if (tail && !/^(let|const|var|function|class|if|for|while|do|switch|try|return|throw|\}|\/\/)/.test(tail) && !/[{;]$/.test(tail)) {
    kept[last] = 'return (' + tail + ');';
  }
  return '(async () => {\n' + kept.join('\n') + '\n})()';
}

async function run(code) {
  let script;
  try {
    script = new vm.Script(code, { filename: 'cell.js' });
  } catch (e) {
    if (!(e instanceof SyntaxError) || !/await/.test(String(e.message))) throw e;
    script = new vm.Script(asAsync(code), { filename: 'cell.js' });
  }
  let value = script.runInContext(context, { breakOnSigint: true, displayErrors: false });
  if (value && typeof value.then === 'function') {
    value = await new Promise((resolve, reject) => {
      interrupt = reject;
      value.then(resolve, reject);
    }).finally(() => { interrupt = null; });
  }
  return value;
}

let pending = '';
let queue = Promise.resolve();

function serve(line) {
  queue = queue.then(async () => {
    const cell = JSON.parse(line);
    const out = { results: [], error: null };
    try {
      const value = await run(cell.code);
      if (value !== undefined) out.results.push({ data: bundle(value), main: true });
    } catch (e) {
      out.error = errorOf(e);
    }
    fs.writeSync(resultFd, JSON.stringify(out) + '\n');
  });
}

const cells = fs.createReadStream(null, { fd: cellFd, encoding: 'utf8' });
cells.on('data', (chunk) => {
  pending += chunk;
  let end;
  while ((end = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, end);
    pending = pending.slice(end + 1);
    if (line.trim()) serve(line);
  }
});
cells.on('end', () => process.exit(0));
