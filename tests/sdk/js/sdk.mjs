// Shared setup for kernelbox's official JS SDK compatibility suite (tests/sdk/js/*.test.mjs).
//
// The SDK (@e2b/code-interpreter 2.8.0 on e2b 2.51.0) is installed outside the repo by
// tests/sdk/install.sh into $KERNELBOX_HOME/sdk/js (default ~/.kernelbox/sdk/js). These test files
// stay in the repo, so they cannot import it by bare name; instead this module resolves the package
// exactly as a bare `import '@e2b/code-interpreter'` from that directory would (createRequire +
// resolve, which honours the package's `main`) and imports it by absolute file URL. Override the
// location with KERNELBOX_SDK_JS=/path/to/dir-with-node_modules.
//
// How it connects: `Sandbox.create({ debug: true, sandboxUrl: KERNELBOX_URL })`. In debug mode the
// SDK never calls the control plane (sandbox id "debug_sandbox_id", no API key, kill() is a no-op)
// and `sandboxUrl` sends every code-interpreter request to the agent's base URL.

import { createRequire } from 'node:module'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { after } from 'node:test'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const home = process.env.KERNELBOX_HOME || join(homedir(), '.kernelbox')
export const SDK_DIR = process.env.KERNELBOX_SDK_JS || join(home, 'sdk', 'js')

if (!existsSync(join(SDK_DIR, 'node_modules', '@e2b', 'code-interpreter', 'package.json'))) {
  throw new Error(
    `the E2B JS SDK is not installed in ${SDK_DIR}: run tests/sdk/install.sh (it installs into $KERNELBOX_HOME/sdk)`,
  )
}

export const URL = (process.env.KERNELBOX_URL || '').replace(/\/+$/, '')
if (!URL) {
  throw new Error(
    'KERNELBOX_URL is not set: start an agent (kernelbox agent --addr 127.0.0.1 --port 0 --workdir DIR ' +
      '--env KERNELBOX_SANDBOX_VAR=sandbox-value) and export KERNELBOX_URL=http://127.0.0.1:PORT, or run `cargo test --test sdk`',
  )
}

// A second agent with an access token, for signed file URLs (files_io.test.mjs); optional.
export const SECURED_URL = (process.env.KERNELBOX_SECURED_URL || '').replace(/\/+$/, '')
export const SECURED_TOKEN = process.env.KERNELBOX_SECURED_TOKEN || ''

// Defence in depth: anything aimed at the control plane would go to a closed loopback port.
process.env.E2B_API_URL = 'http://127.0.0.1:9'
process.env.E2B_DOMAIN = 'kernelbox.invalid'
delete process.env.E2B_API_KEY
delete process.env.E2B_ACCESS_TOKEN
delete process.env.E2B_USER_AGENT_SOURCE

// The code-interpreter SDK uses the global fetch for every call to port 49999. Record every request
// and refuse any that is not aimed at the agent.
export const requests = []
const realFetch = globalThis.fetch
globalThis.fetch = async (input, init) => {
  const url = typeof input === 'string' ? input : input instanceof Request ? input.url : String(input)
  requests.push({ url, method: init?.method ?? 'GET', headers: new Headers(init?.headers) })
  if (!url.startsWith(URL + '/') && !(SECURED_URL && url.startsWith(SECURED_URL + '/'))) {
    throw new Error(`the SDK tried to reach ${url}, which is not the agent at ${URL}`)
  }
  return realFetch(input, init)
}

const require = createRequire(join(SDK_DIR, 'package.json'))
const entry = require.resolve('@e2b/code-interpreter')
export const sdk = await import(pathToFileURL(entry).href)
export const { Sandbox } = sdk

export async function createSandbox() {
  const sbx = await Sandbox.create({ debug: true, sandboxUrl: URL })
  if (sbx.sandboxId !== 'debug_sandbox_id') throw new Error(`unexpected sandbox id ${sbx.sandboxId}`)
  return sbx
}

let counter = 0
/** A unique identifier-safe token, so parallel or repeated runs never see each other's state. */
export function marker() {
  counter += 1
  return `kb${process.pid}_${Date.now().toString(36)}_${counter}`
}

export const stdoutOf = (execution) => execution.logs.stdout.join('')
export const stderrOf = (execution) => execution.logs.stderr.join('')

/** Fails with the execution's error, if any, so that kernel errors show up in the report. */
export function assertOk(execution) {
  if (execution.error) {
    const e = execution.error
    throw new Error(`unexpected execution error ${e.name}: ${e.value}\n${e.traceback}`)
  }
}

/** A maker of temporary directories for one test file; they are removed when the file's tests end. */
export function tempDirs() {
  const dirs = []
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })
  return () => {
    const d = mkdtempSync(join(tmpdir(), 'kb-sdk-js-'))
    dirs.push(d)
    return d
  }
}
