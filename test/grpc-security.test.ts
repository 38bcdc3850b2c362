/**
 * Who may control the daemon: the listen policy, the bearer token and TLS /
 * mutual TLS with real certificates made by openssl, over real sockets. A
 * server on 0.0.0.0 is non-loopback by policy; the tests reach it through
 * 127.0.0.1 only. The CLI tests need a build (`npx tsc -p .`).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { ClientError, createChannel, createClient, Metadata, Status } from 'nice-grpc'
import pino from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { hostOf, isLocalAddress } from '../src/control/address.js'
import { type ClientSecurity, connectControl, describeControlError } from '../src/control/client.js'
import { ReflectionV1Service } from '../src/control/reflection-service.js'
import { startControlServer, type ControlServerOptions } from '../src/control/server.js'
import { checkListenAddress, type ControlSecurity, readToken } from '../src/control/security.js'
import { clientSecurityFrom, controlSecurityFrom } from '../src/cli/security-options.js'
import { startSession } from './helpers/grpc-fixtures.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, onCleanup, run, sh, startProcess, tempDir, waitExit } from './helpers/sys.js'

afterEach(cleanupAll)

/** The certificates, made once for the whole file. */
let k: Pki

beforeAll(async () => {
  const r = await run('openssl', ['version'])
  if (r.code !== 0) throw new Error(`these tests make certificates with openssl, which is missing (${r.stderr.trim()}): apt-get install openssl`)
  k = await makePki(await mkdtemp(join(tmpdir(), 'bsw-pki-')))
})

afterAll(async () => {
  if (k) await rm(k.dir, { recursive: true, force: true })
})

interface Pki {
  dir: string
  ca: string
  otherCa: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
  /** A client certificate for clientKey signed by otherCa. */
  strangerCert: string
  /** The server's key with a certificate that expired in 2020. */
  expiredCert: string
}

const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

/** Two CAs, a server certificate for 127.0.0.1 and localhost, client certificates from each CA, and an expired server certificate. */
async function makePki(dir: string): Promise<Pki> {
  const p = (name: string) => join(dir, name)
  for (const ca of ['ca', 'other-ca']) {
    await sh('openssl', ['req', '-x509', ...ec, '-keyout', p(`${ca}.key`), '-out', p(`${ca}.crt`), '-days', '2', '-subj', `/CN=blockswarm test ${ca}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  }
  await writeFile(p('server.ext'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n')
  await writeFile(p('client.ext'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n')
  const leaf = async (name: string, cn: string, ext: string, ca: string, key = name) => {
    if (key === name) await sh('openssl', ['req', '-new', ...ec, '-keyout', p(`${key}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`])
    else await sh('openssl', ['req', '-new', '-key', p(`${key}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`])
    await sh('openssl', ['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.crt`), '-CAkey', p(`${ca}.key`), '-set_serial', String(Date.now()), '-days', '2', '-extfile', p(ext), '-out', p(`${name}.crt`)])
  }
  await leaf('server', 'blockswarm-daemon', 'server.ext', 'ca')
  await leaf('client', 'operator', 'client.ext', 'ca')
  await leaf('stranger', 'stranger', 'client.ext', 'other-ca', 'client')
  // `openssl ca` is the tool that takes explicit validity dates.
  await writeFile(p('index.txt'), '')
  await writeFile(p('serial'), '01\n')
  await writeFile(p('ca.cnf'), `[ca]\ndefault_ca = t\n[t]\ndatabase = ${p('index.txt')}\nnew_certs_dir = ${dir}\nserial = ${p('serial')}\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n`)
  await sh('openssl', ['ca', '-batch', '-config', p('ca.cnf'), '-cert', p('ca.crt'), '-keyfile', p('ca.key'), '-in', p('server.csr'), '-out', p('expired.crt'),
    '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'])
  return {
    dir, ca: p('ca.crt'), otherCa: p('other-ca.crt'), serverCert: p('server.crt'), serverKey: p('server.key'),
    clientCert: p('client.crt'), clientKey: p('client.key'), strangerCert: p('stranger.crt'), expiredCert: p('expired.crt'),
  }
}

/** A pino logger, and all it wrote (JSON lines). */
function captureLog(): { log: pino.Logger; text: () => string } {
  const raw: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw.push(chunk.toString())
      done()
    },
  })
  const log = pino({ level: 'info' }, stream)
  return { log, text: () => raw.join('') }
}

async function server(opts: Omit<ControlServerOptions, 'log'>, log?: pino.Logger) {
  const session = await startSession()
  const control = await startControlServer(session, { ...opts, log })
  onCleanup(() => control.close())
  return control
}

/** The 127.0.0.1 address of a server listening on 0.0.0.0:PORT. */
const viaLoopback = (address: string) => `127.0.0.1:${address.split(':').at(-1)}`

function client(address: string, security?: ClientSecurity) {
  const c = connectControl(address, security)
  onCleanup(async () => c.close())
  return c
}

/** What a GetVersion call ended with: "OK", or the gRPC status name and the message the CLI would print. */
async function version(address: string, security?: ClientSecurity): Promise<{ code: string; message: string }> {
  try {
    const { version: v } = await client(address, security).ezio.GetVersion({}, { signal: AbortSignal.timeout(20_000) })
    return { code: 'OK', message: v }
  } catch (err) {
    if (!(err instanceof ClientError)) throw err
    return { code: Status[err.code], message: describeControlError(err, address, security).message }
  }
}

describe('listen policy', () => {
  it('tells loopback and unix: addresses from every other address', () => {
    for (const a of ['127.0.0.1:50051', '127.3.4.5:1', 'localhost:50051', 'LOCALHOST:1', '[::1]:50051', '[0:0:0:0:0:0:0:1]:1', '[::ffff:127.0.0.1]:1', 'unix:/run/blockswarm.sock', 'unix:///run/b.sock']) {
      expect([a, isLocalAddress(a)]).toEqual([a, true])
    }
    for (const a of ['0.0.0.0:50051', '[::]:50051', '10.0.0.5:50051', '192.168.1.2:1', '128.0.0.1:1', '126.255.255.255:1', '[::2]:1', '[fe80::1]:1', '[::ffff:10.0.0.1]:1',
      'example.com:50051', 'localhost.example.com:1', 'mylocalhost:1', 'dns:localhost:50051', '127.0.0.1', 'nonsense']) {
      expect([a, isLocalAddress(a)]).toEqual([a, false])
    }
    expect(hostOf('[::1]:50051')).toBe('::1')
    expect(hostOf('unix:/x')).toBe(undefined)
  })

  it('allows a non-loopback address only with TLS, or with --insecure (and a warning)', () => {
    const tls = { cert: Buffer.from('c'), key: Buffer.from('k') }
    const lan = '0.0.0.0:50051'
    const allowed = (s: ControlSecurity) => checkListenAddress(lan, s)
    for (const s of [{}, { token: 't' }, { tls, token: 't' }, { insecure: true }]) {
      expect(checkListenAddress('127.0.0.1:50051', s)).toBe(undefined)
      expect(checkListenAddress('unix:/run/b.sock', s)).toBe(undefined)
    }
    expect(() => allowed({})).toThrow(
      'refusing to listen on 0.0.0.0:50051 without TLS or a token: it is not a loopback address or a unix socket, so anyone who can reach it could control this daemon and write to its disks; add --tls-cert FILE --tls-key FILE (with --tls-client-ca FILE to require client certificates, or --token-file FILE to require a bearer token), or add --insecure to listen there in plaintext anyway',
    )
    expect(() => allowed({ token: 't' })).toThrow('refusing to listen on 0.0.0.0:50051 with a bearer token but no TLS: the token would cross the network in plaintext; add --tls-cert FILE')
    expect(allowed({ tls, token: 't' })).toBe(undefined)
    expect(allowed({ tls: { ...tls, clientCa: Buffer.from('ca') } })).toBe(undefined)
    expect(allowed({ tls })).toMatch(/uses TLS but neither client certificates nor a token: any client that can reach it may control this daemon/)
    expect(allowed({ insecure: true })).toMatch(/is open to anyone who can reach it \(--insecure, no TLS, no token\)/)
    expect(allowed({ token: 't', insecure: true })).toMatch(/takes its bearer token in plaintext \(--insecure\)/)
  })

  it('refuses 0.0.0.0 before binding anything; with --insecure it serves plaintext and logs a warning', async () => {
    const session = await startSession()
    const loop = await server({ listen: ['127.0.0.1:0'] })
    const freed = loop.addresses[0]
    await loop.close()
    await expect(startControlServer(session, { listen: [freed, '0.0.0.0:0'] })).rejects.toThrow('refusing to listen on 0.0.0.0:0 without TLS or a token')
    // The loopback address listed first was not bound either.
    const again = await server({ listen: [freed] })
    expect(again.addresses).toEqual([freed])

    const { log, text } = captureLog()
    const open = await server({ listen: ['0.0.0.0:0'], security: { insecure: true } }, log)
    expect(await version(viaLoopback(open.addresses[0]))).toMatchObject({ code: 'OK', message: expect.stringMatching(/^blockswarm \d/) })
    expect(text()).toMatch(/"level":40,.*"msg":"control API on 0\.0\.0\.0:0 is open to anyone who can reach it/)
  })
})

describe('bearer token', () => {
  const TOKEN = 'c0ffee-5ecret-70ken'

  it('is required on every call and every address, reflection included; refusals log the peer, never the token', async () => {
    const dir = await tempDir()
    const sock = `unix:${join(dir, 'control.sock')}`
    const captured = captureLog()
    const s = await server({ listen: ['127.0.0.1:0', sock], security: { token: TOKEN } }, captured.log)
    const tcp = s.addresses[0]

    expect(await version(tcp)).toEqual({
      code: 'UNAUTHENTICATED',
      message: 'this daemon requires a bearer token: send the metadata "authorization: Bearer TOKEN" (blockswarm commands: --token-file FILE or $BLOCKSWARM_TOKEN) [UNAUTHENTICATED]',
    })
    expect(await version(tcp, { token: 'not-it' })).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining('the bearer token is wrong') })
    expect(await version(tcp, { token: TOKEN.slice(0, -1) })).toMatchObject({ code: 'UNAUTHENTICATED' })
    expect(await version(tcp, { token: TOKEN })).toMatchObject({ code: 'OK' })
    expect(await version(sock)).toMatchObject({ code: 'UNAUTHENTICATED' })
    expect(await version(sock, { token: TOKEN })).toMatchObject({ code: 'OK' })
    await expect(client(tcp).blockswarm.ListTorrents({})).rejects.toMatchObject({ code: Status.UNAUTHENTICATED })
    expect((await client(tcp, { token: TOKEN }).blockswarm.ListTorrents({})).torrents).toEqual([])

    // The scheme is case-insensitive (RFC 7235); any other scheme is no token.
    const channel = createChannel(tcp)
    onCleanup(async () => channel.close())
    const raw = createClient(ReflectionV1Service, channel)
    const listServices = (authorization?: string) =>
      (async () => {
        const metadata = Metadata(authorization ? { authorization } : {})
        const names: string[] = []
        const requests = (async function* () {
          yield { host: '', listServices: '*' }
        })()
        for await (const r of raw.ServerReflectionInfo(requests, { metadata })) names.push(...(r.listServicesResponse?.service ?? []).map((x) => x.name))
        return names
      })()
    await expect(listServices()).rejects.toMatchObject({ code: Status.UNAUTHENTICATED })
    await expect(listServices(`Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`)).rejects.toMatchObject({ code: Status.UNAUTHENTICATED })
    expect(await listServices(`bearer ${TOKEN}`)).toContain('ezio.EZIO')

    const refusals = captured.text().split('\n').filter((l) => l.includes('refused')).map((l) => JSON.parse(l))
    expect(refusals.length).toBeGreaterThanOrEqual(6)
    expect(refusals).toContainEqual(expect.objectContaining({ level: 40, msg: 'control call without a bearer token refused', method: '/ezio.EZIO/GetVersion', peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) }))
    expect(refusals).toContainEqual(expect.objectContaining({ msg: 'control call with a wrong bearer token refused', peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) }))
    expect(refusals).toContainEqual(expect.objectContaining({ msg: 'control call without a bearer token refused', method: '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo' }))
    expect(captured.text()).not.toContain(TOKEN.slice(0, 8))
    expect(captured.text()).not.toContain('not-it')
  })

  it('goes over plaintext off loopback only with --insecure, with a warning', async () => {
    const session = await startSession()
    await expect(startControlServer(session, { listen: ['0.0.0.0:0'], security: { token: TOKEN } })).rejects.toThrow('with a bearer token but no TLS')
    const { log, text } = captureLog()
    const s = await server({ listen: ['0.0.0.0:0'], security: { token: TOKEN, insecure: true } }, log)
    const address = viaLoopback(s.addresses[0])
    expect(await version(address)).toMatchObject({ code: 'UNAUTHENTICATED' })
    expect(await version(address, { token: TOKEN })).toMatchObject({ code: 'OK' })
    expect(text()).toContain('takes its bearer token in plaintext (--insecure): anyone on the network path can read the token')
  })

  it('is read from a file or $BLOCKSWARM_TOKEN, the file first, and must fit in a header', async () => {
    const dir = await tempDir()
    const file = join(dir, 'token')
    await writeFile(file, `${TOKEN}\n`)
    expect(readToken(file, {})).toBe(TOKEN)
    expect(readToken(file, { BLOCKSWARM_TOKEN: 'from-env' })).toBe(TOKEN)
    expect(readToken(undefined, { BLOCKSWARM_TOKEN: 'from-env' })).toBe('from-env')
    expect(readToken(undefined, {})).toBe(undefined)
    await writeFile(file, '\n')
    expect(() => readToken(file, {})).toThrow(`the token in --token-file ${file} is empty (make one with: openssl rand -hex 32)`)
    await writeFile(file, 'two words')
    expect(() => readToken(file, {})).toThrow(`the token in --token-file ${file} holds spaces or characters other than printable ASCII`)
    expect(() => readToken(join(dir, 'none'), {})).toThrow(`cannot read --token-file ${join(dir, 'none')}: ENOENT`)
  })
})

describe('TLS', () => {
  it('on 0.0.0.0: a plaintext client fails, a client trusting the CA gets in, others are told what to add', async () => {
    const { log, text } = captureLog()
    const security = controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.serverKey })
    const s = await server({ listen: ['0.0.0.0:0'], security }, log)
    const address = viaLoopback(s.addresses[0])
    expect(text()).toContain('uses TLS but neither client certificates nor a token')

    expect(await version(address)).toEqual({
      code: 'UNAVAILABLE',
      message: `the daemon at ${address} did not answer as a plaintext gRPC server (Failed to connect): if it serves TLS, add --tls-ca FILE (or --tls); else check that --daemon names a blockswarm daemon's control address`,
    })
    expect(await version(address, clientSecurityFrom({ tlsCa: k.ca }))).toMatchObject({ code: 'OK' })
    for (const other of [clientSecurityFrom({ tlsCa: k.otherCa }), clientSecurityFrom({ tls: true })]) {
      expect(await version(address, other)).toEqual({
        code: 'UNAVAILABLE',
        message: `the daemon at ${address} presented a certificate this client does not accept (unable to verify the first certificate): give --tls-ca FILE, the CA that signed the daemon's --tls-cert (which must name the host of --daemon)`,
      })
    }
    // The certificate names 127.0.0.1 and localhost, not ::1 or other loopback addresses.
    expect((await version(`127.0.0.2:${address.split(':')[1]}`, clientSecurityFrom({ tlsCa: k.ca }))).message).toMatch(/does not accept \(.*IP: 127\.0\.0\.2 is not in the cert's list/)

    const plain = await server({ listen: ['127.0.0.1:0'] })
    expect((await version(plain.addresses[0], clientSecurityFrom({ tlsCa: k.ca }))).message).toBe(
      `the daemon at ${plain.addresses[0]} does not speak TLS (wrong version number): leave out --tls, --tls-ca and --tls-cert, or start the daemon with --tls-cert and --tls-key`,
    )
  })

  it('with a client CA (mutual TLS): no certificate or one from another CA is refused; unix sockets stay plaintext', async () => {
    const dir = await tempDir()
    const sock = `unix:${join(dir, 'control.sock')}`
    const { log, text } = captureLog()
    const s = await server({ listen: ['0.0.0.0:0', sock], security: controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.serverKey, tlsClientCa: k.ca }) }, log)
    const address = viaLoopback(s.addresses[0])
    expect(text()).toMatch(/"tls":"mutual","token":false,"msg":"control API listening"/)
    expect(text()).not.toContain('"level":40')

    expect(await version(address, clientSecurityFrom({ tlsCa: k.ca }))).toEqual({
      code: 'UNAVAILABLE',
      message: `the daemon at ${address} requires a client certificate (tlsv13 alert certificate required): add --tls-cert FILE --tls-key FILE, signed by the CA of its --tls-client-ca`,
    })
    expect(await version(address, clientSecurityFrom({ tlsCa: k.ca, tlsCert: k.clientCert, tlsKey: k.clientKey }))).toMatchObject({ code: 'OK' })
    expect(await version(address, clientSecurityFrom({ tlsCa: k.ca, tlsCert: k.strangerCert, tlsKey: k.clientKey }))).toMatchObject({
      code: 'UNAVAILABLE',
      message: expect.stringContaining('did not accept this client'),
    })
    expect(await version(sock)).toMatchObject({ code: 'OK' })
  })

  it('checks the files at start: pairs, PEM, validity; errors name the flag and the file', async () => {
    const missing = join(k.dir, 'missing.pem')
    expect(() => controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.clientKey })).toThrow(`--tls-key ${k.clientKey} is not the private key of --tls-cert ${k.serverCert}`)
    expect(() => controlSecurityFrom({ tlsCert: missing, tlsKey: k.serverKey })).toThrow(`cannot read --tls-cert ${missing}: ENOENT`)
    expect(() => controlSecurityFrom({ tlsCert: k.serverKey, tlsKey: k.serverKey })).toThrow(`--tls-cert ${k.serverKey} is not a PEM certificate`)
    expect(() => controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.serverCert })).toThrow(`--tls-key ${k.serverCert} is not a PEM private key`)
    expect(() => controlSecurityFrom({ tlsCert: k.expiredCert, tlsKey: k.serverKey })).toThrow(`--tls-cert ${k.expiredCert} expired on Jan  2 00:00:00 2020 GMT`)
    expect(() => controlSecurityFrom({ tlsCert: k.serverCert })).toThrow('--tls-cert and --tls-key go together: give both')
    expect(() => controlSecurityFrom({ tlsClientCa: k.ca })).toThrow('--tls-client-ca needs --tls-cert and --tls-key')
    expect(() => controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.serverKey, tlsClientCa: k.serverKey })).toThrow(`--tls-client-ca ${k.serverKey} is not a PEM certificate`)
    expect(() => clientSecurityFrom({ tlsKey: k.clientKey })).toThrow('--tls-cert and --tls-key go together')
    expect(() => clientSecurityFrom({ tlsCa: missing })).toThrow(`cannot read --tls-ca ${missing}: ENOENT`)
    expect(clientSecurityFrom({})).toEqual({ token: undefined, tls: undefined })
  })
})

describe('blockswarm client commands', () => {
  it('connect with --tls-ca, --tls-cert/--tls-key and --token-file or $BLOCKSWARM_TOKEN, and say what is missing', async () => {
    const dir = await tempDir()
    const tokenFile = join(dir, 'token')
    await writeFile(tokenFile, 'a1b2c3d4e5f6\n')
    const s = await server({
      listen: ['0.0.0.0:0'],
      security: controlSecurityFrom({ tlsCert: k.serverCert, tlsKey: k.serverKey, tlsClientCa: k.ca, tokenFile }),
    })
    const address = viaLoopback(s.addresses[0])
    const mtls = ['--tls-ca', k.ca, '--tls-cert', k.clientCert, '--tls-key', k.clientKey]
    const env = { ...process.env, BLOCKSWARM_TOKEN: '' }

    const ok = await cli(['version', '--daemon', address, ...mtls, '--token-file', tokenFile], { env })
    expect(ok).toEqual({ code: 0, stdout: expect.stringMatching(new RegExp(`^client: blockswarm \\S+\\ndaemon at ${address}: blockswarm \\S+\\n$`)), stderr: '' })
    const viaEnv = await cli(['status', '--json', '--daemon', address, ...mtls], { env: { ...env, BLOCKSWARM_TOKEN: 'a1b2c3d4e5f6' } })
    expect(viaEnv).toEqual({ code: 0, stdout: '[]\n', stderr: '' })

    const noToken = await cli(['status', '--daemon', address, ...mtls], { env })
    expect(noToken).toMatchObject({ code: 1, stderr: 'blockswarm: this daemon requires a bearer token: send the metadata "authorization: Bearer TOKEN" (blockswarm commands: --token-file FILE or $BLOCKSWARM_TOKEN) [UNAUTHENTICATED]\n' })
    const noCert = await cli(['shutdown', '--daemon', address, '--tls-ca', k.ca, '--token-file', tokenFile], { env })
    expect(noCert).toMatchObject({ code: 1, stderr: expect.stringContaining('requires a client certificate') })
    const plain = await cli(['version', '--daemon', address, '--token-file', tokenFile], { env })
    expect(plain).toMatchObject({ code: 1, stderr: expect.stringContaining('if it serves TLS, add --tls-ca FILE (or --tls)') })
    const systemCas = await cli(['pause', 'ab'.repeat(20), '--daemon', address, '--tls', '--token-file', tokenFile], { env })
    expect(systemCas).toMatchObject({ code: 1, stderr: expect.stringContaining('presented a certificate this client does not accept') })
    // None of these calls reached the daemon's Shutdown.
    expect(await version(address, { ...clientSecurityFrom({ tlsCa: k.ca, tlsCert: k.clientCert, tlsKey: k.clientKey }), token: 'a1b2c3d4e5f6' })).toMatchObject({ code: 'OK' })
  })
})

describe('blockswarm daemon', () => {
  it('refuses --listen 0.0.0.0 without TLS or a token, and serves it with --tls-cert, --tls-key, --token-file', async () => {
    const dir = await tempDir()
    const tokenFile = join(dir, 'token')
    await writeFile(tokenFile, 'd00d-f00d-0123\n')
    const env = { ...process.env, BLOCKSWARM_TOKEN: '' }
    const port = await freePort()
    const common = ['daemon', '--listen', `0.0.0.0:${port}`, '--port', '0', '--bind', '127.0.0.1', '--status-interval', '0', '--log-level', 'warn']

    const refused = await cli(common, { env, timeoutMs: 30_000 })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(`blockswarm: refusing to listen on 0.0.0.0:${port} without TLS or a token`)
    expect(refused.stderr).toContain('add --tls-cert FILE --tls-key FILE')
    const plaintextToken = await cli([...common, '--token-file', tokenFile], { env, timeoutMs: 30_000 })
    expect(plaintextToken).toMatchObject({ code: 1, stderr: expect.stringContaining('with a bearer token but no TLS') })

    const daemon = startProcess(process.execPath, [CLI, ...common, '--tls-cert', k.serverCert, '--tls-key', k.serverKey, '--token-file', tokenFile], { env })
    const out = captureOutput(daemon)
    const address = `127.0.0.1:${port}`
    const security = { ...clientSecurityFrom({ tlsCa: k.ca }), token: 'd00d-f00d-0123' }
    let answer = await version(address, security)
    for (let i = 0; i < 300 && answer.code !== 'OK' && daemon.exitCode === null; i++) {
      await new Promise((r) => setTimeout(r, 100))
      answer = await version(address, security)
    }
    expect(answer, out.text()).toMatchObject({ code: 'OK' })
    expect(await version(address, clientSecurityFrom({ tlsCa: k.ca }))).toMatchObject({ code: 'UNAUTHENTICATED' })
    expect(await cli(['shutdown', '--daemon', address, '--tls-ca', k.ca, '--token-file', tokenFile], { env })).toMatchObject({ code: 0, stdout: `the daemon at ${address} is shutting down\n` })
    expect(await waitExit(daemon, 20_000)).toBe(0)
    expect(out.text()).not.toContain('d00d-f00d')
  })
})
