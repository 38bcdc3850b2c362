/** Free TCP ports on 127.0.0.1 below 32768 (Linux hands out ephemeral ports above). */
import { createServer } from 'node:net'

const LOW = 20000
const HIGH = 32768

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** `count` distinct ports that nothing listens on right now. */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = []
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 1000) throw new Error(`found only ${ports.length} of ${count} free ports in ${LOW}-${HIGH - 1} on 127.0.0.1`)
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW))
    if (!ports.includes(port) && (await isFree(port))) ports.push(port)
  }
  return ports
}
