// Code contexts: create, list, restart, remove, routing, and the SDK's error paths.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { sdk, createSandbox, marker, stdoutOf, assertOk, requests, URL, tempDirs } from './sdk.mjs'

const { NotFoundError, InvalidArgumentError, SandboxError } = sdk

// SDK quirk (2.8.0): when /execute answers non-2xx, runCode throws before clearing its
// requestTimeoutMs timer (default 60 s, not unref'd), which keeps this test process alive for a
// minute. A short requestTimeoutMs on the calls that are expected to fail keeps the suite fast.
const FAILING = { requestTimeoutMs: 3000 }

let sbx
const tempDir = tempDirs()
before(async () => {
  sbx = await createSandbox()
})

test('create a python context with cwd', async () => {
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: dir })
  try {
    assert.equal(typeof ctx.id, 'string')
    assert.ok(ctx.id)
    assert.equal(ctx.language, 'python')
    assert.equal(ctx.cwd, dir)
    const execution = await sbx.runCode('import os\nos.getcwd()', { context: ctx })
    assertOk(execution)
    assert.equal(execution.text, dir)
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('create a context with no options defaults to python', async () => {
  const ctx = await sbx.createCodeContext()
  try {
    assert.equal(ctx.language, 'python')
    assert.ok(ctx.cwd)
  } finally {
    await sbx.removeCodeContext(ctx.id)
  }
})

test('a context keeps state and is isolated', async () => {
  const m = marker()
  const a = await sbx.createCodeContext({ language: 'python' })
  const b = await sbx.createCodeContext({ language: 'python' })
  try {
    assert.notEqual(a.id, b.id)
    assertOk(await sbx.runCode(`v_${m} = 'in-a'`, { context: a }))
    const execution = await sbx.runCode(`v_${m}`, { context: a })
    assertOk(execution)
    assert.equal(execution.text, 'in-a')
    const other = await sbx.runCode(`v_${m}`, { context: b })
    assert.equal(other.error?.name, 'NameError')
  } finally {
    await sbx.removeCodeContext(a)
    await sbx.removeCodeContext(b)
  }
})

test('list code contexts', async () => {
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: dir })
  try {
    const contexts = await sbx.listCodeContexts()
    assert.ok(Array.isArray(contexts))
    const mine = contexts.find((c) => c.id === ctx.id)
    assert.deepEqual(mine, { id: ctx.id, language: 'python', cwd: dir })
    const languages = new Set(contexts.map((c) => c.language))
    assert.ok(languages.has('python') && languages.has('javascript'), [...languages].join(','))
    assert.ok(!contexts.some((c) => c.id === 'default'))
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('restart code context', async () => {
  const m = marker()
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: dir })
  try {
    assertOk(await sbx.runCode(`r_${m} = 1`, { context: ctx }))
    assert.equal(await sbx.restartCodeContext(ctx), undefined)
    const gone = await sbx.runCode(`r_${m}`, { context: ctx })
    assert.equal(gone.error?.name, 'NameError')
    assert.equal(gone.executionCount, 1)
    const execution = await sbx.runCode("import os\n(os.getcwd(), os.environ.get('KERNELBOX_SANDBOX_VAR'))", {
      context: ctx,
    })
    assertOk(execution)
    assert.equal(execution.text, `('${dir}', 'sandbox-value')`)
    await sbx.restartCodeContext(ctx.id)
    assertOk(await sbx.runCode('1', { context: ctx }))
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('remove code context', async () => {
  const ctx = await sbx.createCodeContext({ language: 'python' })
  assert.equal(await sbx.removeCodeContext(ctx), undefined)
  const contexts = await sbx.listCodeContexts()
  assert.ok(!contexts.some((c) => c.id === ctx.id))
  await assert.rejects(sbx.runCode('1', { context: ctx, ...FAILING }), (err) => {
    assert.ok(err instanceof NotFoundError, `expected NotFoundError, got ${err}`)
    assert.equal(err.message, `Context ${ctx.id} not found`)
    return true
  })
  await assert.rejects(sbx.removeCodeContext(ctx.id), NotFoundError)
})

test('unknown context id is NotFoundError', async () => {
  const m = marker()
  const bogus = { id: `nope-${m}`, language: 'python', cwd: '/' }
  await assert.rejects(sbx.runCode('1', { context: bogus, ...FAILING }), (err) => {
    assert.ok(err instanceof NotFoundError, `expected NotFoundError, got ${err}`)
    assert.equal(err.message, `Context nope-${m} not found`)
    return true
  })
  await assert.rejects(sbx.restartCodeContext(`nope-${m}`), NotFoundError)
  await assert.rejects(sbx.removeCodeContext(`nope-${m}`), NotFoundError)
})

test('context and language together is InvalidArgumentError', async () => {
  const before = requests.length
  await assert.rejects(
    sbx.runCode('1', { context: { id: 'x', language: 'python', cwd: '/' }, language: 'python' }),
    InvalidArgumentError,
  )
  assert.equal(requests.length, before, 'the SDK rejects this before sending a request')
})

test('language routes to the default contexts', async () => {
  const m = marker()
  assertOk(await sbx.runCode(`d_${m} = 'shared'`))
  const viaLanguage = await sbx.runCode(`d_${m}`, { language: 'python' })
  assertOk(viaLanguage)
  assert.equal(viaLanguage.text, 'shared')
  const viaAlias = await sbx.runCode(`d_${m}`, { context: { id: 'default', language: 'python', cwd: '/' } })
  assertOk(viaAlias)
  assert.equal(viaAlias.text, 'shared')
  assertOk(await sbx.runCode(`del d_${m}`))
})

test('unknown language is a server error', async () => {
  const m = marker()
  await assert.rejects(sbx.runCode('1', { language: `nolang${m}`, ...FAILING }), (err) => {
    assert.ok(err instanceof SandboxError && !(err instanceof NotFoundError), `got ${err}`)
    assert.match(err.message, /^500 /)
    return true
  })
  await assert.rejects(sbx.createCodeContext({ language: `nolang${m}` }), (err) => {
    assert.ok(err instanceof SandboxError && !(err instanceof NotFoundError), `got ${err}`)
    assert.match(err.message, /^500 /)
    return true
  })
})

test('a missing cwd is rejected and leaves no context', async () => {
  const m = marker()
  const missing = join(tempDir(), `missing-${m}`)
  const beforeIds = new Set((await sbx.listCodeContexts()).map((c) => c.id))
  await assert.rejects(sbx.createCodeContext({ language: 'python', cwd: missing }), (err) => {
    assert.ok(err instanceof SandboxError, `got ${err}`)
    assert.match(err.message, /^500 /)
    return true
  })
  const added = (await sbx.listCodeContexts()).filter((c) => !beforeIds.has(c.id))
  assert.deepEqual(added, [])
})

test('?source= query parameter (E2B_USER_AGENT_SOURCE) is ignored; ci mode shows error bodies', async () => {
  const m = marker()
  process.env.E2B_USER_AGENT_SOURCE = 'ci'
  let ci
  try {
    ci = await createSandbox()
  } finally {
    delete process.env.E2B_USER_AGENT_SOURCE
  }
  const before = requests.length
  const execution = await ci.runCode(`print('src-${m}')`)
  assertOk(execution)
  assert.equal(stdoutOf(execution), `src-${m}\n`)
  assert.equal(requests[before].url, `${URL}/execute?source=ci`)
  const ctx = await ci.createCodeContext({ language: 'python' })
  assert.ok((await ci.listCodeContexts()).some((c) => c.id === ctx.id))
  await ci.restartCodeContext(ctx)
  await ci.removeCodeContext(ctx)
  await assert.rejects(ci.createCodeContext({ language: `nolang${m}` }), (err) => {
    assert.match(err.message, /^500 [^:]*: Failed to create context/)
    return true
  })
})
