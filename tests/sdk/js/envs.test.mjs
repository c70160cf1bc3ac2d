// Environment variables: per-request `envs` in every language, and sandbox-level variables.
// The agent under test is started with `--env KERNELBOX_SANDBOX_VAR=sandbox-value`.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { createSandbox, marker, stdoutOf, assertOk } from './sdk.mjs'

let sbx
before(async () => {
  sbx = await createSandbox()
})

const QUOTED = `it's a "quoted" value`
const pyStr = (s) => JSON.stringify(s) // a JSON string is a valid Python and JS string literal here

const READ = {
  python: (k) => `import os\nprint(os.environ[${pyStr(k)}])`,
  javascript: (k) => `console.log(process.env[${pyStr(k)}])`,
  bash: (k) => `printf '%s\\n' "$${k}"`,
  r: (k) => `cat(Sys.getenv('${k}'), '\\n', sep = '')`,
}
const READ_OR_UNSET = {
  python: (k) => `import os\nprint(os.environ.get(${pyStr(k)}, '<unset>'))`,
  javascript: (k) => `console.log(process.env[${pyStr(k)}] === undefined ? '<unset>' : process.env[${pyStr(k)}])`,
  bash: (k) => `printf '%s\\n' "\${${k}-<unset>}"`,
  r: (k) => `cat(Sys.getenv('${k}', unset = '<unset>'), '\\n', sep = '')`,
}

for (const language of ['python', 'javascript', 'bash', 'r']) {
  test(`per-request env with quotes in ${language}, not leaked afterwards`, async () => {
    const key = `KB_ENV_${marker()}`
    const execution = await sbx.runCode(READ[language](key), { language, envs: { [key]: QUOTED } })
    assertOk(execution)
    assert.equal(stdoutOf(execution), QUOTED + '\n')
    const afterRun = await sbx.runCode(READ_OR_UNSET[language](key), { language })
    assertOk(afterRun)
    assert.equal(stdoutOf(afterRun), '<unset>\n', 'a per-request env var leaked into the next execution')
  })
}

test('per-request env tricky values in javascript', async () => {
  const m = marker()
  const values = {
    [`KB_A_${m}`]: 'back\\slash and $HOME and `echo no` and ${process.pid}',
    [`KB_B_${m}`]: 'line one\nline two',
    [`KB_C_${m}`]: 'é😀 ünïcödé',
    [`KB_E_${m}`]: `'''"""`,
  }
  for (const [key, value] of Object.entries(values)) {
    const execution = await sbx.runCode(READ.javascript(key), { language: 'javascript', envs: { [key]: value } })
    assertOk(execution)
    assert.equal(stdoutOf(execution), value + '\n', key)
  }
})

test('sandbox env var in python', async () => {
  const execution = await sbx.runCode("import os\nos.environ.get('KERNELBOX_SANDBOX_VAR')")
  assertOk(execution)
  assert.equal(execution.text, 'sandbox-value')
})

test('sandbox env var in javascript', async () => {
  const execution = await sbx.runCode('process.env.KERNELBOX_SANDBOX_VAR', { language: 'javascript' })
  assertOk(execution)
  assert.equal(execution.text, 'sandbox-value')
})

test('sandbox env var in a new javascript context', async () => {
  const ctx = await sbx.createCodeContext({ language: 'javascript' })
  try {
    const execution = await sbx.runCode('process.env.KERNELBOX_SANDBOX_VAR', { context: ctx })
    assertOk(execution)
    assert.equal(execution.text, 'sandbox-value')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})

test('per-request env overrides, then restores, the sandbox var', async () => {
  const ctx = await sbx.createCodeContext({ language: 'javascript' })
  try {
    const execution = await sbx.runCode('console.log(process.env.KERNELBOX_SANDBOX_VAR)', {
      context: ctx,
      envs: { KERNELBOX_SANDBOX_VAR: 'override' },
    })
    assertOk(execution)
    assert.equal(stdoutOf(execution), 'override\n')
    const afterRun = await sbx.runCode('console.log(process.env.KERNELBOX_SANDBOX_VAR)', { context: ctx })
    assertOk(afterRun)
    assert.equal(stdoutOf(afterRun), 'sandbox-value\n')
  } finally {
    await sbx.removeCodeContext(ctx)
  }
})
