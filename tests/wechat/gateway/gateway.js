// Local Wechaty Puppet Service gateway backed by wechaty-puppet-mock, for PeiTu's WeChat tests.
// Adopted from the verified reference recipe (shared/reference/wechaty-e2e); owned here now.
// stdout: one JSON object per line (events). stdin: one JSON command per line.
//   {"cmd": "say", "from": "Alice", "text": "...", "room": true, "mention": true}
//   {"cmd": "say", "from": "Bob", "file": "/abs/path/photo.jpg"}
//   {"cmd": "say", "from": "Alice", "text": "...", "self": true}   (the bot's account to Alice)
//   {"cmd": "quit"}
// events: ready, mock-login, injected, bot-said (text, or fileName/mediaType/bytes/magic/sha256)
'use strict'
const t0 = Date.now()
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const { PuppetServer } = require('wechaty-puppet-service')
const { PuppetMock, mock } = require('wechaty-puppet-mock')
const { FileBox } = require('file-box')

const PORT = process.env.GW_PORT || '8788'
const HOST = process.env.GW_HOST || '127.0.0.1'  // scripts/docker_e2e.sh: 0.0.0.0, for a bot in a container
const TOKEN = process.env.GW_TOKEN || 'insecure_local_test_token'

const out = obj => process.stdout.write(JSON.stringify({ ms: Date.now() - t0, at: Date.now(), ...obj }) + '\n')

const mocker = new mock.Mocker()
const puppet = new PuppetMock({ mocker })
let bot, room
const contacts = new Map()   // name -> contact: the same person keeps the same id

// puppet-mock's messageSend*() resolves to undefined, but real puppets return the new
// message id and python-wechaty's Message.say() immediately loads that id.
// Capture the id of the message the mock emits synchronously and return it.
const origSend = puppet._messageSend.bind(puppet)
puppet._messageSend = async (conversationId, something) => {
  let id
  const grab = ({ messageId }) => { id = id || messageId }
  puppet.on('message', grab)
  try { await origSend(conversationId, something) } finally { puppet.off('message', grab) }
  return id
}

mocker.use(m => {
  bot = m.createContact({ name: 'PhotoBot' })
  for (const name of ['Alice', 'Bob']) contacts.set(name, m.createContact({ name }))
  const memberIdList = [bot.id, ...[...contacts.values()].map(c => c.id)]
  room = m.createRoom({ topic: 'Family', memberIdList })
  m.login(bot)
  out({ event: 'mock-login', botId: bot.id, aliceId: contacts.get('Alice').id, bobId: contacts.get('Bob').id, roomId: room.id })
  return () => {}
})

puppet.on('message', async ({ messageId }) => {
  const p = mocker.messagePayload(messageId)
  if (!bot || p.talkerId !== bot.id) return
  const ev = { event: 'bot-said', type: p.type, text: p.text, to: p.listenerId || p.roomId }
  const fbJson = mocker.cacheFileBoxPayload.get(messageId)
  if (fbJson) {
    const fb = FileBox.fromJSON(fbJson)
    const buf = await fb.toBuffer()
    Object.assign(ev, { fileName: fb.name, mediaType: fb.mediaType, bytes: buf.length,
      magic: buf.subarray(0, 8).toString('hex'),
      sha256: crypto.createHash('sha256').update(buf).digest('hex') })
  }
  out(ev)
})

// puppet-mock's messageImage() returns a fake QR code; serve the real cached image instead
puppet.messageImage = async (messageId, _imageType) => puppet.messageFile(messageId)

const server = new PuppetServer({
  endpoint: `${HOST}:${PORT}`, puppet, token: TOKEN, tls: { disable: true },
})

let quitting = false
const quit = () => { if (quitting) return; quitting = true; server.stop().finally(() => process.exit(0)) }
const rl = readline.createInterface({ input: process.stdin })
// parent died / closed our stdin -> shut down (no orphan gateways in CI)
rl.on('close', quit)
rl.on('line', line => { try { handle(line) } catch (e) { out({ event: 'error', error: String(e && e.stack || e) }) } })
function contactNamed (name) {
  if (!contacts.has(name)) contacts.set(name, mocker.createContact({ name }))
  return contacts.get(name)
}
function handle (line) {
  let cmd
  try { cmd = JSON.parse(line) } catch (e) { return out({ event: 'error', error: String(e) }) }
  if (cmd.cmd === 'say') {           // a human user sends something to the bot
    // "self": the bot's own account writes (from another device) to the person "from"
    const who = cmd.self ? bot : contactNamed(cmd.from || 'Anon')
    const to = cmd.room ? room : (cmd.self ? contactNamed(cmd.from || 'Anon') : bot)
    // mock caches toJSON() of the box: File boxes are not JSON-serialisable, Base64 ones are
    const what = cmd.file
      ? FileBox.fromBase64(fs.readFileSync(cmd.file).toString('base64'), path.basename(cmd.file))
      : cmd.text
    // in a room, a real client shows "@PhotoBot /配图 ..." and puts the bot in mentionIdList
    if (cmd.room && cmd.mention) who.say(what, [bot]).to(to)
    else who.say(what).to(to)
    out({ event: 'injected', from: cmd.from || 'Anon', text: cmd.text, file: cmd.file, room: !!cmd.room })
  } else if (cmd.cmd === 'quit') {
    quit()
  }
}

server.start().then(
  () => out({ event: 'ready', endpoint: `${HOST}:${PORT}`, token: TOKEN }),
  e => { out({ event: 'error', error: String(e) }); process.exit(1) },
)
