// The official JS SDK (e2b 2.51.0) against `kernelbox serve`, outside debug mode.
//
// Started by `cargo test --test serve`, which runs a `kernelbox serve` of its own and passes its
// URL and API key as KERNELBOX_SERVE_URL / KERNELBOX_SERVE_KEY. The SDK is configured only the way
// a user would: E2B_API_URL and E2B_SANDBOX_URL pointing at serve, E2B_API_KEY.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const URL = process.env.KERNELBOX_SERVE_URL.replace(/\/+$/, '')
process.env.E2B_API_URL = URL
process.env.E2B_SANDBOX_URL = URL
process.env.E2B_API_KEY = process.env.KERNELBOX_SERVE_KEY
process.env.E2B_DOMAIN = 'kernelbox.invalid'
delete process.env.E2B_DEBUG

const home = process.env.KERNELBOX_HOME || join(homedir(), '.kernelbox')
const require = createRequire(join(home, 'sdk', 'js', 'package.json'))
const { Sandbox, AuthenticationError, CommandExitError, NotFoundError } = await import(
  pathToFileURL(require.resolve('e2b')).href
)
const ci = await import(pathToFileURL(require.resolve('@e2b/code-interpreter')).href)

test('create, commands, files, info, timeout, list, kill', async () => {
  const tag = `js${process.pid}${Date.now()}`
  const sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { tag }, envs: { JS_VAR: 'js-value' } })
  try {
    assert.match(sbx.sandboxId, /^[a-z0-9]{20}$/)
    const out = await sbx.commands.run('echo $JS_VAR; id -un; pwd')
    assert.deepEqual(out.stdout.split('\n').filter(Boolean), ['js-value', 'user', '/home/user'])
    assert.equal((await sbx.commands.run('id -un', { user: 'root' })).stdout.trim(), 'root')
    await assert.rejects(sbx.commands.run('exit 4'), CommandExitError)

    await sbx.files.write('/home/user/js/b.txt', 'from js')
    assert.equal(await sbx.files.read('/home/user/js/b.txt'), 'from js')
    assert.deepEqual((await sbx.files.list('/home/user/js')).map((e) => e.name), ['b.txt'])

    const info = await sbx.getInfo()
    assert.equal(info.templateId, 'base')
    assert.deepEqual(info.metadata, { tag })
    await sbx.setTimeout(30_000)
    const shorter = await sbx.getInfo()
    assert.ok(shorter.endAt < info.endAt, 'set_timeout may shorten the deadline')

    const listed = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])
    assert.equal(await sbx.isRunning(), true)

    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 })
    assert.equal((await again.commands.run('echo connected')).stdout.trim(), 'connected')
    assert.ok((await sbx.getInfo()).endAt > shorter.endAt, 'connect extends the deadline')
  } finally {
    assert.equal(await sbx.kill(), true)
  }
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), NotFoundError)
})

test('a sandbox expires on its own', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 2_000 })
  const deadline = Date.now() + 20_000
  while ((await sbx.isRunning()) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250))
  }
  assert.equal(await sbx.isRunning(), false)
})

test('a wrong API key is refused', async () => {
  await assert.rejects(Sandbox.create({ apiKey: 'e2b_' + '0'.repeat(40) }), AuthenticationError)
})

test('an unknown template is not found', async () => {
  await assert.rejects(Sandbox.create('no-such-template'), /not found/)
})

test('the code-interpreter SDK: default template, state, env vars, npm install then require', async () => {
  const sbx = await ci.Sandbox.create({ timeoutMs: 300_000, envs: { CI_JS: 'js-env' } })
  try {
    assert.equal((await sbx.getInfo()).templateId, 'code-interpreter-v1')
    await sbx.runCode('kept = 41')
    assert.equal((await sbx.runCode('kept + 1')).text, '42')
    const env = await sbx.runCode('process.env.CI_JS', { language: 'javascript' })
    assert.equal(env.text, 'js-env')
    await sbx.commands.run('npm install cowsay', { timeoutMs: 180_000 })
    const cow = await sbx.runCode("const cowsay = require('cowsay'); console.log(cowsay.say({ text: 'hi' }))", {
      language: 'javascript',
    })
    assert.equal(cow.error, undefined)
    assert.match(cow.logs.stdout.join(''), /\(oo\)/)
  } finally {
    await sbx.kill()
  }
})
