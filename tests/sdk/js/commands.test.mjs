// Commands and terminals (sbx.commands, sbx.pty) through the sandbox API (port 49983), which the
// SDK reaches at the agent's one URL with `E2b-Sandbox-Port: 49983`.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { sdk, createSandbox, marker, stdoutOf, assertOk, tempDirs } from './sdk.mjs'

const { CommandExitError, TimeoutError } = sdk
const tempDir = tempDirs()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let sbx
before(async () => {
  sbx = await createSandbox()
})

/** Asserts that `promise` rejects with a CommandExitError and returns it. */
async function exitError(promise) {
  let error
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err}`)
    error = err
    return true
  })
  return error
}

test('run in the foreground', async () => {
  const m = marker()
  const result = await sbx.commands.run(`echo ${m}; echo err >&2`)
  assert.equal(result.exitCode, 0)
  assert.equal(result.stdout, `${m}\n`)
  assert.equal(result.stderr, 'err\n')
})

test('a non-zero exit rejects with CommandExitError', async () => {
  const err = await exitError(sbx.commands.run('echo out; echo bad >&2; exit 3'))
  assert.equal(err.exitCode, 3)
  assert.equal(err.stdout, 'out\n')
  assert.equal(err.stderr, 'bad\n')
  assert.equal(err.error, 'exit status 3')
})

test('cwd, envs, user and the sandbox env', async () => {
  const dir = tempDir()
  const result = await sbx.commands.run('pwd; echo "$MY_VAR|$KERNELBOX_SANDBOX_VAR|$(id -un)"', {
    cwd: dir,
    envs: { MY_VAR: "it's mine" },
    user: 'root',
  })
  assert.equal(result.stdout, `${dir}\nit's mine|sandbox-value|root\n`)
})

test('background, then wait', async () => {
  const m = marker()
  const handle = await sbx.commands.run(`sleep 0.5; echo ${m}`, { background: true })
  assert.ok(handle.pid > 0)
  const result = await handle.wait()
  assert.equal(result.stdout, `${m}\n`)
})

test('timeoutMs kills the command and what it started', async () => {
  const flag = join(tempDir(), 'flag')
  const started = Date.now()
  await assert.rejects(
    sbx.commands.run(`(sleep 2; touch ${flag}) & sleep 60`, { timeoutMs: 1000 }),
    (err) => {
      assert.ok(err instanceof TimeoutError, `expected TimeoutError, got ${err}`)
      return true
    },
  )
  assert.ok(Date.now() - started < 10000)
  await sleep(2500)
  assert.ok(!existsSync(flag), 'a process of the command outlived its timeout')
})

test('stdin: send and close', async () => {
  const m = marker()
  const handle = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(handle.pid, `${m} `)
  await handle.sendStdin('more')
  await sbx.commands.closeStdin(handle.pid)
  const result = await handle.wait()
  assert.equal(result.stdout, `${m} more`)
})

test('list, connect and kill', async () => {
  const m = marker()
  const handle = await sbx.commands.run(`sleep 0.8; echo ${m}; sleep 60`, { background: true })
  const listed = (await sbx.commands.list()).find((p) => p.pid === handle.pid)
  assert.ok(listed, 'listed')
  assert.equal(listed.cmd, '/bin/bash')

  let seen = ''
  let resolveSeen
  const gotOutput = new Promise((resolve) => (resolveSeen = resolve))
  const other = await sbx.commands.connect(handle.pid, {
    onStdout: (data) => {
      seen += data
      resolveSeen()
    },
  })
  await gotOutput
  assert.equal(seen, `${m}\n`)

  assert.equal(await sbx.commands.kill(handle.pid), true)
  const err = await exitError(handle.wait())
  assert.equal(err.exitCode, -1)
  assert.equal(err.error, 'signal: killed')
  await exitError(other.wait())
  assert.ok(!(await sbx.commands.list()).some((p) => p.pid === handle.pid))
  assert.equal(await sbx.commands.kill(handle.pid), false)
})

test('connect just after the end gets the end', async () => {
  const handle = await sbx.commands.run('exit 7', { background: true })
  await exitError(handle.wait())
  const late = await sbx.commands.connect(handle.pid)
  const err = await exitError(late.wait())
  assert.equal(err.exitCode, 7)
})

test('pty: create, input, resize', async () => {
  const decoder = new TextDecoder()
  let text = ''
  const terminal = await sbx.pty.create({
    cols: 80,
    rows: 24,
    envs: { KB_PTY: 'yes' },
    onData: (data) => {
      text += decoder.decode(data, { stream: true })
    },
  })
  const encoder = new TextEncoder()
  await sbx.pty.sendInput(terminal.pid, encoder.encode('stty size; echo $TERM $KB_PTY\n'))
  await sleep(500)
  await sbx.pty.resize(terminal.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(terminal.pid, encoder.encode('stty size; exit 4\n'))
  const err = await exitError(terminal.wait())
  assert.equal(err.exitCode, 4)
  for (const expected of ['24 80', 'xterm-256color yes', '30 100']) {
    assert.ok(text.includes(expected), `${JSON.stringify(expected)} not in ${JSON.stringify(text)}`)
  }
})

test('npm install, then require in a javascript context', async () => {
  await sbx.commands.run('npm uninstall cowsay; rm -rf node_modules/cowsay', { timeoutMs: 300_000 })
  await sbx.commands.run('npm install cowsay', { timeoutMs: 300_000 })
  const ctx = await sbx.createCodeContext({ language: 'javascript' })
  try {
    const execution = await sbx.runCode(
      "const cowsay = require('cowsay'); console.log(cowsay.say({ text: 'hi' }))",
      { context: ctx },
    )
    assertOk(execution)
    assert.ok(stdoutOf(execution).includes('^__^'), stdoutOf(execution))
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})
