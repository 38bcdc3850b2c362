/**
 * A real nginx (Debian's) serving a directory on 127.0.0.1: our own config,
 * pid, logs and temp paths in a temp dir, one process (master_process off,
 * so killing it by PID leaves no worker behind), stopped by cleanupAll.
 */
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { captureOutput, freePort, onCleanup, waitFor } from './sys.js'

export interface Nginx {
  /** http://127.0.0.1:PORT */
  readonly url: string
  readonly pid: number
  /** The access log's lines so far: "STATUS METHOD URI RANGE". */
  readonly requests: () => Promise<string[]>
  /** Kill it (by its PID) and remove its temp dir. */
  readonly stop: () => Promise<void>
}

/** nginx over `root`; stopped by cleanupAll, or (keep: for a whole test file) only by stop(). */
export async function startNginx(root: string, opts: { keep?: boolean } = {}): Promise<Nginx> {
  const prefix = await mkdtemp(join(tmpdir(), 'bsw-nginx-'))
  const removePrefix = () => rm(prefix, { recursive: true, force: true })
  if (!opts.keep) onCleanup(removePrefix)
  await mkdir(join(prefix, 'tmp'))
  const port = await freePort()
  const log = join(prefix, 'access.log')
  const conf = join(prefix, 'nginx.conf')
  const tmp = (what: string) => `${what}_temp_path ${join(prefix, 'tmp', what)};`
  await writeFile(
    conf,
    [
      process.getuid?.() === 0 ? 'user root;' : '',
      'master_process off;',
      `pid ${join(prefix, 'nginx.pid')};`,
      `error_log ${join(prefix, 'error.log')} warn;`,
      'events { worker_connections 256; }',
      'http {',
      '  log_format ranges "$status $request_method $uri $http_range";',
      `  access_log ${log} ranges;`,
      `  ${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(tmp).join(' ')}`,
      '  default_type application/octet-stream;',
      '  sendfile on;',
      '  keepalive_timeout 60;',
      '  keepalive_requests 10000;',
      `  server { listen 127.0.0.1:${port}; root ${root}; location / { } }`,
      '}',
      '',
    ].join('\n'),
  )
  await writeFile(log, '')
  const child = spawn('nginx', ['-c', conf, '-p', prefix, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await new Promise((r) => child.once('exit', r))
    }
    await removePrefix()
  }
  if (!opts.keep) onCleanup(stop)
  const out = captureOutput(child)
  const url = `http://127.0.0.1:${port}`
  try {
    await waitFor(
    'nginx to listen',
    async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited ${child.exitCode}: ${out.text()}${await readFile(join(prefix, 'error.log'), 'utf8').catch(() => '')}`)
      return fetch(`${url}/`, { method: 'HEAD' }).then(
        () => true,
        () => false,
      )
    },
    20_000,
    out.text,
  )
  } catch (err) {
    await stop()
    throw err
  }
  return {
    url,
    pid: child.pid!,
    requests: async () => (await readFile(log, 'utf8')).split('\n').filter((l) => l !== ''),
    stop,
  }
}
