// Client-side timeouts: the SDK aborts, the server notices the disconnect and interrupts the kernel.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { sdk, createSandbox, marker, stdoutOf, assertOk } from './sdk.mjs'

const { TimeoutError } = sdk

let sbx
before(async () => {
  sbx = await createSandbox()
})

test('timeoutMs raises TimeoutError and the python kernel is interrupted', async () => {
  const m = marker()
  const ctx = await sbx.createCodeContext({ language: 'python' })
  try {
    assertOk(await sbx.runCode(`kept_${m} = 'still here'`, { context: ctx }))
    let started = Date.now()
    await assert.rejects(
      sbx.runCode(`import time\ntime.sleep(30)\nfinished_${m} = True`, { context: ctx, timeoutMs: 2000 }),
      (err) => {
        assert.ok(err instanceof TimeoutError, `expected TimeoutError, got ${err}`)
        assert.match(err.message, /Execution timed out/)
        return true
      },
    )
    assert.ok(Date.now() - started < 6000)
    started = Date.now()
    const execution = await sbx.runCode(`print(kept_${m}, 'finished_${m}' in globals())`, {
      context: ctx,
      timeoutMs: 10000,
    })
    const elapsed = Date.now() - started
    assertOk(execution)
    assert.equal(stdoutOf(execution), 'still here False\n')
    assert.ok(elapsed < 8000, `the follow-up run took ${elapsed} ms: the kernel was not interrupted`)
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

for (const [language, cell] of [
  ['js', 'await new Promise(r => setTimeout(r, 30000))'],
  ['ts', 'await new Promise<void>(() => {})'],
  ['python', 'import asyncio\nawait asyncio.sleep(30)'],
]) {
  test(`timeoutMs on an awaiting ${language} cell keeps the context's state`, async () => {
    const ctx = await sbx.createCodeContext({ language })
    try {
      assertOk(await sbx.runCode(language === 'python' ? 'kept = 41' : 'var kept = 41', { context: ctx }))
      await assert.rejects(sbx.runCode(cell, { context: ctx, timeoutMs: 1000 }), TimeoutError)
      const execution = await sbx.runCode('kept + 1', { context: ctx, timeoutMs: 10000 })
      assertOk(execution)
      assert.equal(execution.text, '42')
    } finally {
      await sbx.removeCodeContext(ctx)
    }
  })
}

test('long silent execution completes (keepalives are ignored)', async () => {
  const ctx = await sbx.createCodeContext({ language: 'python' })
  try {
    const execution = await sbx.runCode("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('done')", {
      context: ctx,
    })
    assertOk(execution)
    assert.equal(stdoutOf(execution), 'start\ndone\n')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('parallel contexts run concurrently', async () => {
  const a = await sbx.createCodeContext({ language: 'python' })
  const b = await sbx.createCodeContext({ language: 'python' })
  try {
    const started = Date.now()
    const [ea, eb] = await Promise.all([
      sbx.runCode("import time\ntime.sleep(2)\n'a'", { context: a }),
      sbx.runCode("import time\ntime.sleep(2)\n'b'", { context: b }),
    ])
    const elapsed = Date.now() - started
    assert.deepEqual([ea.text, eb.text], ['a', 'b'])
    assert.ok(elapsed < 3800, `two contexts did not run in parallel (${elapsed} ms)`)
  } finally {
    await sbx.removeCodeContext(a)
    await sbx.removeCodeContext(b)
  }
})
