// sandbox.files.read / write over the sandbox API's plain HTTP /files routes, and the signed
// downloadUrl / uploadUrl of a sandbox that has an access token.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createSandbox, tempDirs, Sandbox, SECURED_URL, SECURED_TOKEN } from './sdk.mjs'

const tempDir = tempDirs()
let sbx
before(async () => {
  sbx = await createSandbox()
})

test('write and read text', async () => {
  const path = join(tempDir(), 'hello.txt')
  const info = await sbx.files.write(path, 'hello, kernelbox ✓')
  assert.equal(info.path, path)
  assert.equal(info.name, 'hello.txt')
  assert.equal(await sbx.files.read(path), 'hello, kernelbox ✓')
  assert.equal(readFileSync(path, 'utf8'), 'hello, kernelbox ✓')
})

test('bytes round-trip untouched (the SDK always offers gzip)', async () => {
  const data = randomBytes(1024 * 1024)
  const path = join(tempDir(), 'nested', 'dir', 'blob.bin')
  await sbx.files.write(path, data.buffer.slice(data.byteOffset, data.byteOffset + data.length))
  const got = await sbx.files.read(path, { format: 'bytes' })
  assert.ok(got instanceof Uint8Array)
  assert.deepEqual(Buffer.from(got), data)
})

test('streams both ways, and gzip uploads', async () => {
  const data = randomBytes(3 * 1024 * 1024)
  const dir = tempDir()
  const path = join(dir, 'stream.bin')
  const body = new ReadableStream({
    start(controller) {
      for (let i = 0; i < data.length; i += 65536) controller.enqueue(data.subarray(i, i + 65536))
      controller.close()
    },
  })
  await sbx.files.write(path, body)
  assert.deepEqual(readFileSync(path), data)
  const stream = await sbx.files.read(path, { format: 'stream' })
  const chunks = []
  for await (const chunk of stream) chunks.push(Buffer.from(chunk))
  assert.deepEqual(Buffer.concat(chunks), data)

  const text = 'compressible line\n'.repeat(50000)
  await sbx.files.write(join(dir, 'gz.txt'), text, { gzip: true })
  assert.equal(readFileSync(join(dir, 'gz.txt'), 'utf8'), text)
  assert.equal(await sbx.files.read(join(dir, 'gz.txt'), { gzip: true }), text)
})

test('write several files at once', async () => {
  const dir = tempDir()
  const files = [
    { path: join(dir, 'a.txt'), data: 'alpha' },
    { path: join(dir, 'sub', 'b.txt'), data: 'beta' },
    { path: join(dir, 'c.txt'), data: 'gamma' },
  ]
  const infos = await sbx.files.write(files)
  assert.deepEqual(
    infos.map((i) => i.path),
    files.map((f) => f.path),
  )
  for (const f of files) assert.equal(readFileSync(f.path, 'utf8'), f.data)
})

test('read and write as root', async () => {
  const path = join(tempDir(), 'root.txt')
  await sbx.files.write(path, 'as root', { user: 'root' })
  assert.equal(statSync(path).uid, 0)
  assert.equal(await sbx.files.read(path, { user: 'root' }), 'as root')
})

test('metadata', async () => {
  const path = join(tempDir(), 'meta.txt')
  const info = await sbx.files.write(path, 'x', { metadata: { Owner: 'bob', stage: 'draft' } })
  assert.deepEqual(info.metadata, { owner: 'bob', stage: 'draft' })
  const again = await sbx.files.write(path, 'y')
  assert.ok(!again.metadata || Object.keys(again.metadata).length === 0)
})

test('errors', async () => {
  const dir = tempDir()
  await assert.rejects(sbx.files.read(join(dir, 'missing.txt')), (e) => e.name === 'FileNotFoundError' || e.name === 'NotFoundError')
  await assert.rejects(sbx.files.read(dir), (e) => e.name === 'InvalidArgumentError')
  await assert.rejects(sbx.files.read(join(dir, 'x'), { user: 'no-such-user-kb' }), (e) => e.name === 'AuthenticationError')
})

/** A sandbox as `Sandbox.create()` returns it outside debug mode, with an access token. */
function securedSandbox(token) {
  return new Sandbox({
    sandboxId: 'secured_sandbox',
    envdAccessToken: token,
    envdVersion: '0.6.13',
    debug: true,
    sandboxUrl: SECURED_URL,
  })
}

test('signed URLs with an access token', { skip: !SECURED_URL && 'KERNELBOX_SECURED_URL is not set' }, async () => {
  const secured = securedSandbox(SECURED_TOKEN)
  const dir = tempDir()
  const path = join(dir, 'signed.txt')
  await secured.files.write(path, 'written with the token')
  assert.equal(await secured.files.read(path), 'written with the token')

  let url = await secured.downloadUrl(path)
  assert.match(url, /signature=v1_/)
  let res = await fetch(url)
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'written with the token')
  res = await fetch(url.replace('signature=v1_', 'signature=v1_x'))
  assert.equal(res.status, 401)
  await res.body?.cancel()

  url = await secured.downloadUrl(path, { user: 'root', useSignatureExpiration: 60 })
  assert.match(url, /signature_expiration=/)
  res = await fetch(url)
  assert.equal(await res.text(), 'written with the token')

  const target = join(dir, 'uploaded.txt')
  url = await secured.uploadUrl(target)
  const form = new FormData()
  form.append('file', new Blob(['via signed upload']), 'ignored')
  res = await fetch(url, { method: 'POST', body: form })
  assert.equal(res.status, 200)
  assert.equal((await res.json())[0].path, target)
  assert.equal(readFileSync(target, 'utf8'), 'via signed upload')

  const noToken = securedSandbox(undefined)
  await assert.rejects(noToken.files.write(join(dir, 'nope.txt'), 'x'), (e) => e.name === 'AuthenticationError')
  assert.ok(!existsSync(join(dir, 'nope.txt')))
})
