'use strict';
// CodeBeaker launcher for JavaScript programs (script mode). The program is program.js next to this
// file; it runs as the main module as if it were this file's name in the working directory
// (`node main.js` run in the workspace): `require('./x')` and `import './x.js'`, `__filename`,
// `__dirname`, `import.meta.url`, the module search path and process.argv[1] all name the working
// directory, never the directory the launcher lives in. Whether the program is CommonJS or an ES
// module follows the package.json files above the working directory, as for a file there.
//
// A CommonJS program that does not compile is reported on descriptor 4 (`syntax`), which is
// closed before the program starts. The launcher itself may be loaded either way (a package.json
// above its own directory may say "module"), so it uses only what both kinds of module have.
(function codebeakerLaunch() {
  const fs = process.getBuiltinModule('fs');
  const path = process.getBuiltinModule('path');
  const vm = process.getBuiltinModule('vm');
  const Module = process.getBuiltinModule('module');
  const { pathToFileURL } = process.getBuiltinModule('url');

  const launcher = process.argv[1];
  const name = path.basename(launcher);
  const cwd = process.cwd();
  const file = path.join(cwd, name);
  const source = fs.readFileSync(path.join(path.dirname(launcher), 'program.js'), 'utf8');

  function ownFrame(line) {
    return /^\s+at /.test(line) && (line.includes(launcher) || line.includes('node:'));
  }

  function report(error) {
    const text = error && typeof error.stack === 'string'
      ? error.stack.split('\n').filter((line) => !ownFrame(line)).join('\n')
      : 'Uncaught ' + String(error);
    process.stderr.write(text + '\n');
    process.exitCode = 1;
  }

  function verdict(text) {
    try {
      if (text) fs.writeSync(4, text);
      fs.closeSync(4);
    } catch (_) {
      // Descriptor 4 is there only when the engine asks for the verdict.
    }
  }

  // The "type" of the nearest package.json above the working directory.
  function packageType() {
    for (let dir = cwd; ; dir = path.dirname(dir)) {
      try {
        return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).type;
      } catch (_) {
        // No package.json here (or not one Node could read either): look further up.
      }
      if (dir === path.dirname(dir)) {
        return undefined;
      }
    }
  }

  process.argv[1] = file;
  if (packageType() === 'module') {
    verdict('');
    // The program's URL is answered with its source by a loader hook, so that it is a module of
    // the working directory and its relative imports resolve there.
    const url = pathToFileURL(file).href;
    const hooks = `
      let url, source;
      export async function initialize(data) { ({ url, source } = data); }
      export async function resolve(specifier, context, next) {
        return specifier === url ? { url, shortCircuit: true } : next(specifier, context);
      }
      export async function load(target, context, next) {
        return target === url ? { format: 'module', source, shortCircuit: true } : next(target, context);
      }`;
    Module.register('data:text/javascript,' + encodeURIComponent(hooks), {
      data: { url, source },
    });
    import(url).catch(report);
    return;
  }

  try {
    vm.compileFunction(source, ['exports', 'require', 'module', '__filename', '__dirname'], {
      filename: file,
    });
  } catch (error) {
    if (error instanceof SyntaxError) {
      const where = (error.stack || '').split('\n').filter((line) => !ownFrame(line));
      process.stderr.write(where.join('\n') + '\n');
      verdict('syntax');
      process.exitCode = 1;
      return;
    }
  }
  verdict('');

  const program = new Module(file, null);
  program.id = '.';
  program.filename = file;
  program.paths = Module._nodeModulePaths(cwd);
  process.mainModule = program;
  Module._cache[file] = program;
  try {
    program._compile(source, file);
    program.loaded = true;
  } catch (error) {
    report(error);
  }
})();
