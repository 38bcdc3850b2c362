/**
 * The fleet view end to end, over loopback: a `blockswarm seed` with its
 * embedded tracker (1 s announce interval), an upload limit and
 * `--dashboard`, and 4 `blockswarm deploy`s (one a rate-limited peer, one
 * killed mid-way). Headless Chromium (Debian's chromium, driven by
 * puppeteer-core) opens the page; the DOM must show 4 nodes, the killed one
 * silent, the others done, the fleet count and T*. `blockswarm fleet --once`
 * prints the same. The SSE stream must carry an announce within 2 s.
 * UPDATE_SCREENSHOT=1 writes docs/fleet-dashboard.png.
 */
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import puppeteer, { type Browser } from 'puppeteer-core'
import { afterAll, describe, expect, it } from 'vitest'
import { type DeployProc, startDeploy, startSeed } from './helpers/deploy-run.js'
import { fetchFleet, followEvents, makeFleetImage } from './helpers/fleet.js'
import { makeTarget } from './helpers/grpc-fixtures.js'
import { cleanupAll, cli, freePort, onCleanup, ROOT, tempDir, waitFor } from './helpers/sys.js'

afterAll(cleanupAll)

const CHROMIUM = '/usr/bin/chromium'

describe('the fleet dashboard', () => {
  it('shows 4 deploys live in a browser: one silent after it is killed, three done, the fleet count and T*; the terminal view agrees; SSE within 2 s of an announce', async () => {
    const dir = await tempDir('bsw-fleet-')
    const trackerPort = await freePort()
    const { source, size, torrentFile, torrent } = await makeFleetImage(dir, `http://127.0.0.1:${trackerPort}/announce`, 13)
    const dashPort = await freePort()
    const seeder = await startSeed(torrentFile, source, ['--tracker-embedded', String(trackerPort), '--tracker-interval', '1', '--upload-rate', '1M', '--dashboard', String(dashPort)])
    const url = /^ {2}dashboard +(\S+)$/m.exec(seeder.text())?.[1]
    expect(url, seeder.text()).toBe(`http://127.0.0.1:${dashPort}/`)
    const sse = followEvents(`${url}api/fleet/events`)

    const deploys: DeployProc[] = []
    const ports: number[] = []
    for (let i = 0; i < 4; i++) {
      const target = await makeTarget(dir, `node${i}.img`, size)
      // node 1 uploads slowly to the others (a rate-limited peer); node 3 is killed mid-way
      const extra = i === 1 ? ['--upload-rate', '200K'] : []
      ports.push(await freePort())
      deploys.push(startDeploy([torrentFile, target, '--port', String(ports[i]), '--bind', '127.0.0.1', '--skip-check', '--seed-idle', '3', '--log-level', 'warn', ...extra]))
    }
    const victim = deploys[3]
    const victimAddress = `127.0.0.1:${ports[3]}`
    // killed once the dashboard shows it part-way
    await waitFor('node 3 to be part-way on the dashboard', async () => {
      if (victim.child.exitCode !== null) return true
      const snap = await fetchFleet(url!)
      return snap.nodes.some((n) => n.address === victimAddress && n.progress > 0)
    }, 60_000, victim.text)
    expect(victim.child.exitCode, 'node 3 finished before it could be killed').toBeNull()
    victim.child.kill('SIGKILL')

    const browser: Browser = await puppeteer.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new'], defaultViewport: { width: 1280, height: 860 } })
    onCleanup(() => browser.close())
    const page = await browser.newPage()
    await page.goto(url!)
    // bounded wait for what the issue names: 4 nodes, the killed one silent, the other three done
    const dom = () =>
      page.evaluate(() => ({
        rows: [...document.querySelectorAll('#nodes tbody tr')].map((tr) => ({ state: tr.getAttribute('data-state'), address: tr.querySelector('.address')?.textContent })),
        done: document.getElementById('fleet-done')?.textContent,
        bound: document.getElementById('bound')?.textContent,
        rates: document.getElementById('bound-rates')?.textContent,
        chart: document.querySelectorAll('#chart path').length,
      }))
    const expected = ['done', 'done', 'done', 'silent']
    await waitFor('the page to show three nodes done and one silent', async () => {
      const d = await dom()
      return d.rows.length === 4 && JSON.stringify(d.rows.map((r) => r.state).sort()) === JSON.stringify(expected)
    }, 120_000, () => `${seeder.text()}\n${deploys.map((d) => d.text()).join('\n')}`)
    const d = await dom()
    expect(d.rows).toHaveLength(4)
    expect(d.done).toBe('3 / 4')
    expect(d.bound).toMatch(/^\d+ s$|min/)
    // C_seed is the seeder's --upload-rate (1 MiB/s shown as 1.05 MB/s)
    expect(d.rates).toMatch(/C_seed 1\.05 MB\/s \(upload-rate\)/)
    expect(d.chart).toBe(2)
    const silentRow = d.rows.find((r) => r.state === 'silent')
    const json = await fetchFleet(url!)
    expect(json.nodes.find((n) => n.state === 'silent')!.address).toBe(silentRow!.address)
    expect(json.fleet).toMatchObject({ nodes: 4, done: 3 })
    expect(json.bound.seconds).toBeGreaterThan(0)
    for (const n of json.nodes.filter((x) => x.state === 'done')) expect(n.progress).toBe(1)
    const silent = json.nodes.find((n) => n.state === 'silent')!
    expect(silent.address).toBe(victimAddress)
    expect(silent.progress).toBeGreaterThan(0)
    expect(silent.progress).toBeLessThan(1)
    const shot = join(dir, 'fleet-dashboard.png')
    await page.screenshot({ path: shot as `${string}.png`, fullPage: true })
    if (process.env.UPDATE_SCREENSHOT === '1') await copyFile(shot, join(ROOT, 'docs/fleet-dashboard.png'))

    const term = await cli(['fleet', url!, '--once'], { timeoutMs: 20_000 })
    expect(term.code, term.stderr).toBe(0)
    expect(term.stdout).toMatch(/^nodes done 3\/4 \(3 done, 1 silent\)/m)
    expect(term.stdout).toMatch(/^T\* \d/m)
    expect(term.stdout.match(/^127\.0\.0\.1:\d+ .* (done|silent) /gm)).toHaveLength(4)

    // an announce reaches the stream within 2 s, measured from the announce
    const peerId = Buffer.from('-XX0001-fleettest001')
    const q = `info_hash=${escape(torrent.infoHash.replace(/../g, (h) => String.fromCharCode(parseInt(h, 16))))}&peer_id=${escape(peerId.toString('latin1'))}&port=7999&uploaded=0&downloaded=0&left=${size}&event=started&compact=1`
    const announcedAt = Date.now()
    const answer = await fetch(`http://127.0.0.1:${trackerPort}/announce?${q}`)
    expect(answer.status).toBe(200)
    const hex = peerId.toString('hex')
    await waitFor('the SSE stream to carry the announce within 2 s', () => sse.events.some((e) => e.at >= announcedAt && e.snap.nodes.some((n) => n.id === hex)), 2_000)
  }, 240_000)
})
