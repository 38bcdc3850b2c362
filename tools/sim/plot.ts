/**
 * The scaling plot: last/T* against N, as a PNG, drawn headlessly — a
 * Vega-Lite chart rendered to SVG by Vega (no canvas, no browser), then
 * rasterised by resvg compiled to WebAssembly (no native build), with a
 * system TrueType font for the text (Debian's fonts-dejavu-core).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { initWasm, Resvg } from '@resvg/resvg-wasm'
import { parse, View } from 'vega'
import { compile, type TopLevelSpec } from 'vega-lite'

export interface Point {
  /** The line it belongs to ("sim: equal links", "bench:swarm", "unicast"). */
  readonly series: string
  readonly n: number
  readonly ratio: number
}

const FONTS = [
  '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf',
  '/usr/share/fonts/dejavu/DejaVuSans.ttf',
  '/usr/share/fonts/TTF/DejaVuSans.ttf',
  '/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf',
]

let wasmReady: Promise<void> | undefined

/** Lines of at most `width` characters, broken after "; " or ", " (the chart is as wide as its widest title line). */
function wrap(lines: readonly string[], width = 110): string[] {
  const out: string[] = []
  for (const line of lines) {
    let cur = ''
    for (const part of line.split(/(?<=[;,] )/)) {
      if (cur && cur.length + part.length > width) {
        out.push(cur.trimEnd())
        cur = '   '
      }
      cur += part
    }
    if (cur.trim()) out.push(cur.trimEnd())
  }
  return out
}

function font(): Buffer {
  const path = FONTS.find((p) => existsSync(p))
  if (!path) throw new Error(`no font for the plot's text (looked for ${FONTS.join(', ')}): install Debian package fonts-dejavu-core`)
  return readFileSync(path)
}

/** The chart as SVG: a log–log panel with unicast, and a linear panel of the swarm lines alone. */
export async function chartSvg(points: readonly Point[], title: string, subtitle: readonly string[] = []): Promise<string> {
  const swarmOnly = points.filter((p) => !p.series.startsWith('unicast'))
  const layer = (ys: 'log' | 'linear', width: number) => ({
    width,
    height: 340,
    mark: { type: 'line' as const, point: true, strokeWidth: 2 },
    encoding: {
      x: { field: 'n', type: 'quantitative' as const, scale: { type: 'log' as const }, title: 'N (nodes)' },
      y: {
        field: 'ratio',
        type: 'quantitative' as const,
        scale: ys === 'log' ? { type: 'log' as const } : { zero: true },
        title: ys === 'log' ? 'last finish / T* (log)' : 'last finish / T*',
      },
      color: { field: 'series', type: 'nominal' as const, title: null },
      tooltip: [{ field: 'series' }, { field: 'n' }, { field: 'ratio' }],
    },
  })
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 15, subtitle: wrap(subtitle), subtitleFontSize: 11, anchor: 'start' },
    config: { font: 'DejaVu Sans', background: 'white', legend: { orient: 'bottom', columns: 3, labelLimit: 400, symbolType: 'circle' } },
    hconcat: [
      { ...layer('log', 380), data: { values: [...points] }, title: 'with unicast (N·S/C_seed)' },
      { ...layer('linear', 380), data: { values: [...swarmOnly] }, title: 'the swarm alone' },
    ],
    resolve: { scale: { color: 'shared' } },
  }
  const view = new View(parse(compile(spec).spec), { renderer: 'none' })
  const svg = await view.toSVG()
  view.finalize()
  return svg
}

export async function writeChartPng(path: string, points: readonly Point[], title: string, subtitle: readonly string[] = []): Promise<void> {
  const svg = await chartSvg(points, title, subtitle)
  if (!wasmReady) {
    const require = createRequire(import.meta.url)
    wasmReady = initWasm(readFileSync(require.resolve('@resvg/resvg-wasm/index_bg.wasm')))
  }
  await wasmReady
  const fontData = font()
  const png = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: 2 },
    font: { fontBuffers: [fontData], defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans', loadSystemFonts: false },
  })
    .render()
    .asPng()
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, png)
}
