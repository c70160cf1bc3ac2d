// Languages other than Python through runCode({ language }) and language contexts.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { sdk, createSandbox, marker, stdoutOf, assertOk, tempDirs } from './sdk.mjs'

let sbx
const tempDir = tempDirs()
before(async () => {
  sbx = await createSandbox()
})

for (const language of ['javascript', 'js', 'JavaScript']) {
  test(`javascript as ${language}`, async () => {
    const m = marker()
    const execution = await sbx.runCode(`const a_${m} = 20;\nconsole.log('js-${m}');\na_${m} * 2 + 2`, { language })
    assertOk(execution)
    assert.equal(stdoutOf(execution), `js-${m}\n`)
    assert.equal(execution.text, '42')
  })
}

test('javascript string result and top-level await', async () => {
  const m = marker()
  const execution = await sbx.runCode(`await Promise.resolve('Hello ${m}!')`, { language: 'js' })
  assertOk(execution)
  assert.equal(execution.text, `Hello ${m}!`)
})

test('javascript error', async () => {
  const m = marker()
  const execution = await sbx.runCode(`throw new Error('jsboom-${m}')`, { language: 'javascript' })
  assert.ok(execution.error)
  assert.ok((execution.error.value + execution.error.traceback).includes(`jsboom-${m}`))
})

for (const language of ['typescript', 'ts']) {
  test(`typescript as ${language}`, async () => {
    const m = marker()
    const execution = await sbx.runCode(
      `function add_${m}(a: number, b: number): number { return a + b }\nconst n_${m}: number = add_${m}(40, 2);\nn_${m}`,
      { language },
    )
    assertOk(execution)
    assert.equal(execution.text, '42')
  })
}

test('javascript context with cwd keeps state', async () => {
  const m = marker()
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'javascript', cwd: dir })
  try {
    assert.equal(ctx.language, 'javascript')
    assert.equal(ctx.cwd, dir)
    const cwd = await sbx.runCode('process.cwd()', { context: ctx })
    assertOk(cwd)
    assert.equal(cwd.text, dir)
    assertOk(await sbx.runCode(`globalThis.s_${m} = 5`, { context: ctx }))
    const execution = await sbx.runCode(`s_${m} * 2`, { context: ctx })
    assertOk(execution)
    assert.equal(execution.text, '10')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('typescript context', async () => {
  const m = marker()
  const ctx = await sbx.createCodeContext({ language: 'ts' })
  try {
    assert.equal(ctx.language, 'typescript')
    const execution = await sbx.runCode(`const t_${m}: string = 'typed'; t_${m}`, { context: ctx })
    assertOk(execution)
    assert.equal(execution.text, 'typed')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('bash', async () => {
  const m = marker()
  const execution = await sbx.runCode(`echo bash-${m}\necho $((6 * 7))`, { language: 'bash' })
  assertOk(execution)
  assert.equal(stdoutOf(execution), `bash-${m}\n42\n`)
})

test('bash context: cwd, envs and exit code', async () => {
  const m = marker()
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'bash', cwd: dir })
  try {
    assert.equal(ctx.language, 'bash')
    const execution = await sbx.runCode(`pwd; echo $FOO_${m}; ls /nonexistent-${m}`, {
      context: ctx,
      envs: { [`FOO_${m}`]: 'barz' },
    })
    const out = stdoutOf(execution)
    assert.ok(out.startsWith(`${dir}\nbarz\n`), out)
    assert.ok(out.includes(`/nonexistent-${m}`), out)
    assert.ok(execution.error)
    assert.equal(execution.error.name, '')
    assert.equal(execution.error.value, '2')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('r', async () => {
  const m = marker()
  const execution = await sbx.runCode(`x_${m} <- c(1, 2, 3)\nsum(x_${m}) * 7`, { language: 'r' })
  assertOk(execution)
  // IRkernel publishes values as display_data, so (as with E2B's server) the R result is not the
  // "main" result: read results[0], not execution.text.
  assert.deepEqual(execution.results.map((r) => r.text), ['[1] 42'])
})

test('r context with cwd', async () => {
  const m = marker()
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'r', cwd: dir })
  try {
    assert.equal(ctx.language, 'r')
    const execution = await sbx.runCode(`cat('r-${m}\\n')\ngetwd()`, { context: ctx })
    assertOk(execution)
    assert.equal(stdoutOf(execution), `r-${m}\n`)
    assert.deepEqual(execution.results.map((r) => r.text), [`[1] "${dir}"`])
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('java', async () => {
  const m = marker()
  // JJava (JShell): the value of the last expression is the main result, println goes to stdout.
  const execution = await sbx.runCode(`int a_${m} = 20;\nSystem.out.println("java-${m}");\na_${m} * 2 + 2`, {
    language: 'java',
  })
  assertOk(execution)
  assert.equal(stdoutOf(execution), `java-${m}\n`)
  assert.equal(execution.text, '42')
})

test('java errors', async () => {
  const m = marker()
  let execution = await sbx.runCode(`throw new IllegalStateException("javaboom-${m}");`, { language: 'java' })
  assert.ok(execution.error)
  assert.equal(execution.error.name, 'RuntimeException')
  assert.equal(execution.error.value, `java.lang.IllegalStateException, javaboom-${m}`)
  assert.ok(execution.error.traceback.includes(`javaboom-${m}`))
  execution = await sbx.runCode(`int n_${m} = "not an int";`, { language: 'java' })
  assert.ok(execution.error)
  assert.equal(execution.error.name, 'CompilationException')
  assert.ok(execution.error.traceback.includes('incompatible types'))
})

test('java envs are system properties', async () => {
  // As with E2B's Java kernel, per-request envs are system properties, removed afterwards;
  // sandbox-level variables are system properties too.
  const key = `FOO_${marker()}`
  let execution = await sbx.runCode(`System.getProperty("${key}")`, { language: 'java', envs: { [key]: 'bar "q" é' } })
  assertOk(execution)
  assert.equal(execution.text, 'bar "q" é')
  execution = await sbx.runCode(`System.getProperty("${key}", "default")`, { language: 'java' })
  assert.equal(execution.text, 'default')
  execution = await sbx.runCode('System.getProperty("KERNELBOX_SANDBOX_VAR")', { language: 'java' })
  assert.equal(execution.text, 'sandbox-value')
})

test('java context: cwd, state and an interrupted busy loop', async () => {
  const m = marker()
  const dir = tempDir()
  const ctx = await sbx.createCodeContext({ language: 'java', cwd: dir })
  try {
    assert.equal(ctx.language, 'java')
    assert.equal(ctx.cwd, dir)
    const cwd = await sbx.runCode('System.getProperty("user.dir")', { context: ctx })
    assertOk(cwd)
    assert.equal(cwd.text, dir)
    assertOk(await sbx.runCode(`int kept_${m} = 7;`, { context: ctx }))
    await assert.rejects(sbx.runCode('while (true) {}', { context: ctx, timeoutMs: 3000 }), (err) => {
      assert.ok(err instanceof sdk.TimeoutError, `expected TimeoutError, got ${err}`)
      return true
    })
    const execution = await sbx.runCode(`kept_${m} * 6`, { context: ctx, timeoutMs: 20000 })
    assertOk(execution)
    assert.equal(execution.text, '42')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})
