// Sandbox.runCode in the default Python context: streams, callbacks, results, errors.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSandbox, marker, stdoutOf, stderrOf, assertOk } from './sdk.mjs'

let sbx
before(async () => {
  sbx = await createSandbox()
})

test('callbacks and output messages', async () => {
  const m = marker()
  const out = []
  const err = []
  const res = []
  const errors = []
  const execution = await sbx.runCode(
    `import sys\nprint('out-${m}')\nprint('err-${m}', file=sys.stderr)\n41 + 1`,
    {
      onStdout: (msg) => out.push(msg),
      onStderr: async (msg) => {
        await new Promise((r) => setTimeout(r, 5)) // callbacks are awaited
        err.push(msg)
      },
      onResult: (r) => res.push(r),
      onError: (e) => errors.push(e),
    },
  )
  assertOk(execution)
  assert.equal(stdoutOf(execution), `out-${m}\n`)
  assert.equal(stderrOf(execution), `err-${m}\n`)
  assert.ok(out.length > 0 && err.length > 0)
  assert.equal(out.map((x) => x.line).join(''), `out-${m}\n`)
  assert.equal(err.map((x) => x.line).join(''), `err-${m}\n`)
  for (const x of out) assert.equal(x.error, false)
  for (const x of err) assert.equal(x.error, true)
  for (const x of [...out, ...err]) assert.equal(typeof x.timestamp, 'number')
  assert.equal(res.length, 1)
  assert.equal(res[0].text, '42')
  assert.equal(res[0].isMainResult, true)
  assert.deepEqual(errors, [])
  assert.equal(execution.text, '42')
  assert.equal(typeof execution.executionCount, 'number')
})

test('last expression text, quote stripping, raw and extra', async () => {
  const m = marker()
  const execution = await sbx.runCode(`'hello-${m}'`)
  assertOk(execution)
  assert.equal(execution.text, `hello-${m}`)
  assert.equal(execution.results.length, 1)
  const r = execution.results[0]
  assert.equal(r.isMainResult, true)
  // The server always sends `extra` (as {} here); the JS SDK keeps it in raw and builds its own extra
  // from unknown top-level keys, which must be none.
  assert.deepEqual(r.raw, { text: `hello-${m}`, extra: {} })
  assert.deepEqual(r.extra, {})
  assert.deepEqual(r.formats(), [])
})

test('statement has no result', async () => {
  const m = marker()
  const execution = await sbx.runCode(`y_${m} = 1`)
  assertOk(execution)
  assert.deepEqual(execution.results, [])
  assert.equal(execution.text, undefined)
  assert.deepEqual(execution.logs, { stdout: [], stderr: [] })
})

test('display data results', async () => {
  const m = marker()
  const execution = await sbx.runCode(
    'from IPython.display import display, HTML, Markdown\n' +
      `display(HTML('<b>one-${m}</b>'))\n` +
      `display(Markdown('**two-${m}**'))\n` +
      `display({'application/x-kb-${m}': 'zz', 'text/plain': 'p-${m}'}, raw=True)\n` +
      `'main-${m}'`,
  )
  assertOk(execution)
  assert.equal(execution.results.length, 4)
  const [first, second, third, main] = execution.results
  assert.equal(first.isMainResult, false)
  assert.equal(first.html, `<b>one-${m}</b>`)
  assert.deepEqual(first.formats(), ['html'])
  assert.equal(second.isMainResult, false)
  assert.equal(second.markdown, `**two-${m}**`)
  assert.equal(third.isMainResult, false)
  assert.equal(third.text, `p-${m}`)
  assert.deepEqual(third.raw.extra, { [`application/x-kb-${m}`]: 'zz' })
  assert.equal(main.isMainResult, true)
  assert.equal(main.text, `main-${m}`)
  assert.equal(execution.text, `main-${m}`)
})

test('dict gives json', async () => {
  const m = marker()
  const execution = await sbx.runCode(`{'k': [1, 2], 'm': '${m}', 3: None}`)
  assertOk(execution)
  const r = execution.results[0]
  assert.equal(r.isMainResult, true)
  assert.deepEqual(r.json, { k: [1, 2], m, 3: null })
  assert.equal(r.text, `{'k': [1, 2], 'm': '${m}', 3: None}`)
  assert.deepEqual(r.formats(), ['json'])
})

test('matplotlib gives png and a line chart', async () => {
  const m = marker()
  const execution = await sbx.runCode(
    'import matplotlib.pyplot as plt\n' +
      'fig, ax = plt.subplots()\n' +
      "ax.plot([0, 1, 2], [0, 1, 4], label='sq')\n" +
      `ax.set_title('chart-${m}')\n` +
      "ax.set_xlabel('Time [s]')\n" +
      'plt.show()',
  )
  assertOk(execution)
  assert.equal(execution.results.length, 1)
  const r = execution.results[0]
  assert.equal(r.isMainResult, false)
  assert.match(r.text, /^<Figure size/)
  assert.deepEqual([...Buffer.from(r.png, 'base64').subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  assert.ok(r.formats().includes('png'))
  assert.equal(r.chart.type, 'line')
  assert.equal(r.chart.title, `chart-${m}`)
  assert.equal(r.chart.x_label, 'Time [s]')
  assert.equal(r.chart.x_unit, 's')
  assert.equal(r.chart.elements.length, 1)
  assert.equal(r.chart.elements[0].label, 'sq')
  assert.deepEqual(r.chart.elements[0].points.map(([x, y]) => [Number(x), Number(y)]), [[0, 0], [1, 1], [2, 4]])
})

test('pandas DataFrame gives data and html', async () => {
  const m = marker()
  const execution = await sbx.runCode(`import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', '${m}']})`)
  assertOk(execution)
  const r = execution.results[0]
  assert.equal(r.isMainResult, true)
  assert.deepEqual(r.data, { a: [1, 2], b: ['x', m] })
  assert.match(r.html, /<table/)
  assert.ok(r.text.includes(m))
  assert.deepEqual(r.formats(), ['html', 'data'])
})

test('exception is an execution error, runCode does not throw', async () => {
  const m = marker()
  const errors = []
  const execution = await sbx.runCode(`print('before-${m}')\nraise ValueError('boom-${m}')`, {
    onError: (e) => errors.push(e),
  })
  assert.ok(execution.error)
  assert.equal(execution.error.name, 'ValueError')
  assert.equal(execution.error.value, `boom-${m}`)
  assert.ok(execution.error.traceback.includes('ValueError'))
  assert.ok(execution.error.traceback.includes(`boom-${m}`))
  assert.ok(!execution.error.traceback.includes('\x1b['), 'no ANSI colour codes')
  assert.equal(errors.length, 1)
  assert.equal(errors[0].name, 'ValueError')
  assert.equal(stdoutOf(execution), `before-${m}\n`)
  assert.deepEqual(execution.results, [])
})

test('syntax error', async () => {
  const m = marker()
  const execution = await sbx.runCode(`def f_${m}(:\n    pass`)
  assert.ok(execution.error)
  assert.equal(execution.error.name, 'SyntaxError')
})

test('execution count in a fresh context', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kb-sdk-js-'))
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: dir })
  try {
    const counts = []
    for (const code of ['1', '2', "raise KeyError('k')", '4']) {
      counts.push((await sbx.runCode(code, { context: ctx })).executionCount)
    }
    assert.deepEqual(counts, [1, 2, 3, 4])
  } finally {
    await sbx.removeCodeContext(ctx)
    rmSync(dir, { recursive: true, force: true })
  }
})

test('unicode round trip', async () => {
  const m = marker()
  const execution = await sbx.runCode(`print('é😀-${m}')\n'ü中-${m}'`)
  assertOk(execution)
  assert.equal(stdoutOf(execution), `é😀-${m}\n`)
  assert.equal(execution.text, `ü中-${m}`)
})

test('large output', async () => {
  const m = marker()
  const execution = await sbx.runCode(`for i in range(20000):\n    print('${m}', i)`)
  assertOk(execution)
  const lines = stdoutOf(execution).split('\n').filter(Boolean)
  assert.equal(lines.length, 20000)
  assert.equal(lines[0], `${m} 0`)
  assert.equal(lines[19999], `${m} 19999`)
})
