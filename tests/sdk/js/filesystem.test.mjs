// sandbox.files over the sandbox API (port 49983, Connect RPC): list, exists, getInfo, makeDir,
// rename, remove and the streaming watchDir. The agent runs on this machine, so the tests prepare
// and check files directly in their own temporary directories.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync, readFileSync, existsSync, symlinkSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createSandbox, sdk, tempDirs } from './sdk.mjs'

const tempDir = tempDirs()
const { FileNotFoundError, InvalidArgumentError, AuthenticationError, FilesystemEventType } = sdk

let sbx
before(async () => {
  sbx = await createSandbox()
})

test('list, exists and getInfo', async () => {
  const dir = tempDir()
  writeFileSync(join(dir, 'b.txt'), 'hello')
  mkdirSync(join(dir, 'a_dir'))
  writeFileSync(join(dir, 'a_dir', 'nested.txt'), 'x')
  symlinkSync('b.txt', join(dir, 'link'))

  const entries = await sbx.files.list(dir)
  assert.deepEqual(
    entries.map((e) => [e.name, e.type]),
    // envd types a symlink by its target, and tells it apart by symlinkTarget.
    [['a_dir', 'dir'], ['b.txt', 'file'], ['link', 'file']],
  )
  const deep = await sbx.files.list(dir, { depth: 2 })
  assert.deepEqual(
    deep.map((e) => e.path),
    [join(dir, 'a_dir'), join(dir, 'a_dir', 'nested.txt'), join(dir, 'b.txt'), join(dir, 'link')],
  )

  const info = await sbx.files.getInfo(join(dir, 'b.txt'))
  assert.equal(info.name, 'b.txt')
  assert.equal(info.type, 'file')
  assert.equal(info.size, 5)
  assert.equal(info.mode, 0o644)
  assert.equal(info.permissions, '-rw-r--r--')
  assert.ok(info.owner && info.group)
  assert.ok(Math.abs(info.modifiedTime.getTime() - statSync(join(dir, 'b.txt')).mtimeMs) < 1000)
  assert.equal(info.symlinkTarget, undefined)
  const link = await sbx.files.getInfo(join(dir, 'link'))
  assert.equal(link.type, 'file')
  assert.equal(link.mode, 0o644)
  assert.equal(link.symlinkTarget, join(dir, 'b.txt'))

  assert.equal(await sbx.files.exists(join(dir, 'b.txt')), true)
  assert.equal(await sbx.files.exists(join(dir, 'missing')), false)
  await assert.rejects(sbx.files.getInfo(join(dir, 'missing')), FileNotFoundError)
  await assert.rejects(sbx.files.list(join(dir, 'missing')), FileNotFoundError)
  await assert.rejects(sbx.files.list(join(dir, 'b.txt')), InvalidArgumentError)
})

test('makeDir, rename and remove', async () => {
  const dir = tempDir()
  assert.equal(await sbx.files.makeDir(join(dir, 'x', 'y')), true)
  assert.ok(statSync(join(dir, 'x', 'y')).isDirectory())
  assert.equal(await sbx.files.makeDir(join(dir, 'x', 'y')), false)
  writeFileSync(join(dir, 'file'), 'f')
  await assert.rejects(sbx.files.makeDir(join(dir, 'file')), InvalidArgumentError)

  const moved = await sbx.files.rename(join(dir, 'file'), join(dir, 'new', 'place'))
  assert.equal(moved.name, 'place')
  assert.equal(readFileSync(join(dir, 'new', 'place'), 'utf8'), 'f')
  await assert.rejects(sbx.files.rename(join(dir, 'file'), join(dir, 'other')), FileNotFoundError)

  await sbx.files.remove(join(dir, 'x'))
  assert.equal(existsSync(join(dir, 'x')), false)
  await sbx.files.remove(join(dir, 'x'))
})

test('users: root works, an unknown user is refused', async () => {
  const dir = tempDir()
  writeFileSync(join(dir, 'r.txt'), 'r')
  assert.deepEqual((await sbx.files.list(dir, { user: 'root' })).map((e) => e.name), ['r.txt'])
  await assert.rejects(sbx.files.list(dir, { user: 'kernelbox-no-such-user' }), AuthenticationError)
})

test('watchDir streams events, recursively, with entries', async () => {
  const dir = tempDir()
  mkdirSync(join(dir, 'sub'))
  const events = []
  let resolveWrite
  const wrote = new Promise((resolve) => (resolveWrite = resolve))
  const handle = await sbx.files.watchDir(
    dir,
    (e) => {
      events.push(e)
      if (e.type === FilesystemEventType.WRITE && e.name === 'sub/w.txt') resolveWrite()
    },
    { recursive: true, includeEntry: true },
  )
  writeFileSync(join(dir, 'sub', 'w.txt'), 'w')
  let timer
  await Promise.race([
    wrote,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no write event: ${JSON.stringify(events)}`)), 10000)
    }),
  ]).finally(() => clearTimeout(timer))
  await handle.stop()
  assert.equal(events[0].type, FilesystemEventType.CREATE)
  assert.equal(events[0].name, 'sub/w.txt')
  const write = events.find((e) => e.type === FilesystemEventType.WRITE)
  assert.equal(write.entry.path, join(dir, 'sub', 'w.txt'))
  assert.equal(write.entry.type, 'file')

  await assert.rejects(sbx.files.watchDir(join(dir, 'missing'), () => {}), FileNotFoundError)
  writeFileSync(join(dir, 'f'), 'f')
  await assert.rejects(sbx.files.watchDir(join(dir, 'f'), () => {}), InvalidArgumentError)
})
