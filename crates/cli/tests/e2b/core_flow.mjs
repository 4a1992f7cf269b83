// The core flow of E2B's JavaScript SDK against a CodeBeaker server: create, run (stdout,
// stderr, exit code, streaming callbacks, envs, cwd, a background command and its kill, a
// background command fed through its stdin), files, list, kill, and a call on the killed
// sandbox. Reads E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY, and loads the SDK from the folder
// named by E2B_JS_PREFIX (where `npm install --prefix` put it); exits non-zero on the first check
// that fails, naming it.
import { createRequire } from 'node:module'

const require = createRequire(`${process.env.E2B_JS_PREFIX}/`)
const { Sandbox, CommandExitError, SandboxNotFoundError, FileNotFoundError, TimeoutError } = require('e2b')

function check(what, ok, got) {
  if (!ok) {
    console.error(`FAILED: ${what}: got ${JSON.stringify(got)}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

const sandbox = await Sandbox.create({ metadata: { flow: 'js' } })
check('create gives an id', typeof sandbox.sandboxId === 'string' && sandbox.sandboxId.length > 0, sandbox.sandboxId)

const hi = await sandbox.commands.run('echo hi; echo oops >&2')
check('stdout', hi.stdout === 'hi\n', hi.stdout)
check('stderr', hi.stderr === 'oops\n', hi.stderr)
check('exit code 0', hi.exitCode === 0, hi.exitCode)

let exitError = null
try {
  await sandbox.commands.run('exit 3')
} catch (e) {
  exitError = e
}
check('a non-zero exit throws CommandExitError', exitError instanceof CommandExitError && exitError.exitCode === 3, String(exitError))

const chunks = []
await sandbox.commands.run('echo one; echo two', { onStdout: (d) => chunks.push(d) })
check('onStdout sees the output', chunks.join('') === 'one\ntwo\n', chunks)

const env = await sandbox.commands.run('echo $GREETING', { envs: { GREETING: 'hello' } })
check('envs', env.stdout === 'hello\n', env.stdout)

let timedOut = null
const started = Date.now()
try {
  await sandbox.commands.run('sleep 30', { timeoutMs: 2000 })
} catch (e) {
  timedOut = e
}
check('a command past its timeout throws TimeoutError', timedOut instanceof TimeoutError && Date.now() - started < 15000, String(timedOut))

const background = await sandbox.commands.run('sleep 1; echo background', { background: true })
check('a background command has a pid', background.pid > 0, background.pid)
const waited = await background.wait()
check('wait() returns its output', waited.stdout === 'background\n', waited.stdout)

const seen = []
const running = await sandbox.commands.run('echo started; sleep 30; echo never', {
  background: true,
  onStdout: (d) => seen.push(d),
})
for (let i = 0; i < 200 && seen.join('') !== 'started\n'; i++) await new Promise((r) => setTimeout(r, 50))
check('the background command started', seen.join('') === 'started\n', seen)
const killedAt = Date.now()
check('kill() of a running command is true', (await running.kill()) === true, null)
let killed = null
try {
  await running.wait()
} catch (e) {
  killed = e
}
check('wait() of a killed command throws CommandExitError', killed instanceof CommandExitError && killed.exitCode === -1, String(killed))
check('its error says it was killed', killed.error === 'signal: killed', killed.error)
check('it kept the output until the kill', killed.stdout === 'started\n', killed.stdout)
check('kill ends the command at once', Date.now() - killedAt < 5000, Date.now() - killedAt)
check('kill() of a killed command is false', (await sandbox.commands.kill(running.pid)) === false, null)
const nextAt = Date.now()
const next = await sandbox.commands.run('echo next')
check('the sandbox runs the next command at once', next.stdout === 'next\n' && Date.now() - nextAt < 5000, next.stdout)

const fedSeen = []
const fed = await sandbox.commands.run('cat', { background: true, stdin: true, onStdout: (d) => fedSeen.push(d) })
await sandbox.commands.sendStdin(fed.pid, 'first\n')
for (let i = 0; i < 200 && fedSeen.join('') !== 'first\n'; i++) await new Promise((r) => setTimeout(r, 50))
check('sendStdin reaches the running command', fedSeen.join('') === 'first\n', fedSeen)
await sandbox.commands.sendStdin(fed.pid, 'second\n')
await sandbox.commands.closeStdin(fed.pid)
const fedEnd = await fed.wait()
check('closeStdin ends cat, and wait() returns what it echoed', fedEnd.stdout === 'first\nsecond\n', fedEnd.stdout)

await sandbox.files.makeDir('sub')
const cwd = await sandbox.commands.run('pwd', { cwd: 'sub' })
check('cwd', cwd.stdout.trim().endsWith('/sub'), cwd.stdout)

await sandbox.files.write('notes/a.txt', 'some text')
check('files.read', (await sandbox.files.read('notes/a.txt')) === 'some text', null)
await sandbox.files.write('zipped.txt', 'compressed '.repeat(100), { gzip: true })
check('gzip upload', (await sandbox.files.read('zipped.txt')) === 'compressed '.repeat(100), null)
check('gzip download', (await sandbox.files.read('zipped.txt', { gzip: true })) === 'compressed '.repeat(100), null)
await sandbox.files.remove('zipped.txt')
const bytes = await sandbox.files.read('notes/a.txt', { format: 'bytes' })
check('files.read bytes', bytes.length === 9, bytes.length)
check('files.exists', (await sandbox.files.exists('notes/a.txt')) === true, null)
check('files.exists (missing)', (await sandbox.files.exists('notes/none.txt')) === false, null)
const names = (await sandbox.files.list('notes')).map((e) => e.name)
check('files.list', JSON.stringify(names) === '["a.txt"]', names)
let missing = null
try {
  await sandbox.files.read('notes/none.txt')
} catch (e) {
  missing = e
}
check('reading a missing file throws FileNotFoundError', missing instanceof FileNotFoundError, String(missing))
const moved = await sandbox.files.rename('notes/a.txt', 'notes/b.txt')
check('files.rename', moved.name === 'b.txt', moved)
await sandbox.files.remove('notes/b.txt')
check('files.remove', (await sandbox.files.exists('notes/b.txt')) === false, null)

const listed = await Sandbox.list().nextItems()
check('Sandbox.list has it', listed.some((s) => s.sandboxId === sandbox.sandboxId), listed.map((s) => s.sandboxId))

check('isRunning', (await sandbox.isRunning()) === true, null)
await sandbox.kill()
check('isRunning after kill', (await sandbox.isRunning()) === false, null)
check('killing again is false', (await Sandbox.kill(sandbox.sandboxId)) === false, null)

let gone = null
try {
  await sandbox.commands.run('echo late')
} catch (e) {
  gone = e
}
check('a call on the killed sandbox fails as not running', gone instanceof SandboxNotFoundError, String(gone))
console.log('js core flow: all checks passed')
