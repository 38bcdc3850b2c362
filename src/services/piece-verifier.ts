/**
 * SHA-1 of whole pieces read from the target (the resume check), inline or
 * on worker threads; downloaded pieces are hashed as their blocks arrive
 * (ActivePiece). A 16 MiB piece takes ~9 ms of CPU (1.7 GB/s); inline, that
 * is 9 ms in which no socket is read. With `threads` ≥ 1 the piece buffer is
 * transferred (not copied) to a worker and handed back with its digest.
 * Workers start at the first hash, so a seeder or a deploy that checks
 * nothing never pays for one (each is a V8 instance: ~10 MiB).
 */
import { createHash } from 'node:crypto'
import { Worker } from 'node:worker_threads'

export interface Hashed {
  readonly digest: Buffer
  /** The data, usable again (in worker mode the original buffer was moved to the worker and back). */
  readonly data: Buffer
}

interface Job {
  resolve: (h: Hashed) => void
  reject: (err: Error) => void
  /** Kept when the buffer was copied rather than moved. */
  original?: Buffer
}

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buf, offset, length }) => {
  const digest = createHash('sha1').update(new Uint8Array(buf, offset, length)).digest()
  parentPort.postMessage({ id, buf, digest }, buf instanceof ArrayBuffer ? [buf] : [])
})
`

class HashWorker {
  readonly jobs = new Map<number, Job>()
  private readonly worker: Worker

  constructor(onExit: (w: HashWorker) => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true })
    this.worker.unref()
    this.worker.on('message', (m: { id: number; buf: ArrayBuffer; digest: Uint8Array }) => {
      const job = this.jobs.get(m.id)
      if (!job) return
      this.jobs.delete(m.id)
      if (this.jobs.size === 0) this.worker.unref()
      const digest = Buffer.from(m.digest.buffer, m.digest.byteOffset, m.digest.byteLength)
      job.resolve({ digest, data: job.original ?? Buffer.from(m.buf) })
    })
    let dead = false
    const fail = (err: Error) => {
      if (dead) return
      dead = true
      for (const job of this.jobs.values()) job.reject(new Error(`piece hashing worker failed: ${err.message}`))
      this.jobs.clear()
      onExit(this)
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)))
  }

  submit(id: number, data: Buffer, job: Job): void {
    this.jobs.set(id, job)
    this.worker.ref()
    const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer
    if (whole) {
      this.worker.postMessage({ id, buf: data.buffer, offset: 0, length: data.length }, [data.buffer as ArrayBuffer])
    } else {
      // part of a larger or shared allocation: send a copy, keep the caller's buffer
      job.original = data
      const copy = new Uint8Array(data)
      this.worker.postMessage({ id, buf: copy.buffer, offset: 0, length: copy.length }, [copy.buffer])
    }
  }

  terminate(): Promise<number> {
    return this.worker.terminate()
  }
}

export class PieceVerifier {
  private readonly workers: HashWorker[] = []
  private nextId = 1
  private closed = false

  constructor(readonly threads: number) {}

  private spawn(): void {
    this.workers.push(
      new HashWorker((dead) => {
        const i = this.workers.indexOf(dead)
        if (i >= 0) this.workers.splice(i, 1)
      }),
    )
  }

  /** Start the worker threads now (each takes ~0.1 s to boot), so that the first hash does not wait for one. */
  warm(): void {
    if (this.closed) return
    while (this.workers.length < this.threads) this.spawn()
  }

  /**
   * SHA-1 of `data`. In worker mode a buffer that owns its whole memory is
   * moved to the worker: use `data` from the result afterwards, not the
   * argument.
   */
  hash(data: Buffer): Promise<Hashed> {
    if (this.closed) return Promise.reject(new Error('piece verifier is closed'))
    if (this.threads === 0) return Promise.resolve({ digest: createHash('sha1').update(data).digest(), data })
    while (this.workers.length < this.threads) this.spawn()
    let best = this.workers[0]
    for (const w of this.workers) if (w.jobs.size < best.jobs.size) best = w
    return new Promise((resolve, reject) => best.submit(this.nextId++, data, { resolve, reject }))
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers.length = 0
  }
}
