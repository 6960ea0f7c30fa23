import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { renderTrainingPlotSvg, writeTrainingPlots, type LogEntry } from '../src/plot.js';

/** 60 logged steps: loss decaying with deterministic "noise", lr with linear warmup then cosine decay. */
function syntheticHistory(n = 60, peak = 1e-4): LogEntry[] {
  const warmup = 6;
  const out: LogEntry[] = [];
  for (let step = 1; step <= n; step++) {
    const learning_rate =
      step <= warmup
        ? (peak * step) / warmup
        : peak * 0.5 * (1 + Math.cos((Math.PI * (step - warmup)) / (n - warmup)));
    const loss = 0.5 + 2 * Math.exp(-step / 15) + 0.05 * Math.sin(1.3 * step) * Math.cos(0.7 * step);
    out.push({ step, epoch: step / 20, loss, grad_norm: 1 + 0.1 * Math.sin(step), learning_rate });
  }
  return out;
}

/** Text content of the SVG's <text> elements. */
function texts(svg: string): string[] {
  return [...svg.matchAll(/<text\b[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!);
}

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-plot-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('renderTrainingPlotSvg', () => {
  it('renders a well-formed SVG with titled axes, a legend and scientific lr labels', async () => {
    const svg = renderTrainingPlotSvg(syntheticHistory(), { title: 'demo run' });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('width="900"');
    expect(svg).toContain('height="600"');
    expect(svg).not.toMatch(/NaN|undefined/);

    const t = texts(svg);
    // Axis names (the legend repeats "loss" and "learning rate": the axis names are there in any case).
    expect(t).toEqual(expect.arrayContaining(['step', 'loss', 'learning rate', 'demo run']));
    expect(t.filter((s) => s === 'learning rate').length).toBeGreaterThanOrEqual(2); // axis + legend
    // lr tick labels in scientific notation (peak 1e-4).
    expect(t.some((s) => /^\d(\.\d+)?e-\d+$/.test(s))).toBe(true);
    // 60 points > 30: a smoothed loss is drawn alongside the raw one.
    expect(t).toContain('loss (smoothed)');

    // librsvg parses it (it rejects malformed XML).
    const meta = await sharp(Buffer.from(svg)).metadata();
    expect(meta.format).toBe('svg');
    expect([meta.width, meta.height]).toEqual([900, 600]);
  });

  it('honours width/height and skips entries without loss / learning_rate', () => {
    const h: LogEntry[] = [
      { step: 1, loss: 2 },
      { step: 2, eval_loss: 1.9 }, // an eval entry: skipped by both series
      { step: 3, loss: Number.NaN, learning_rate: 1e-3 }, // non-finite loss skipped, lr kept
      { step: 4, loss: 1.5, learning_rate: 5e-4 },
    ];
    const svg = renderTrainingPlotSvg(h, { width: 640, height: 480 });
    expect(svg).toContain('width="640"');
    expect(svg).toContain('height="480"');
    expect(svg).not.toMatch(/NaN/);
    expect(texts(svg)).toEqual(expect.arrayContaining(['step', 'loss', 'learning rate']));
  });

  it('draws a single panel when only the loss was logged', () => {
    const svg = renderTrainingPlotSvg(syntheticHistory().map(({ learning_rate: _lr, ...e }) => e));
    const t = texts(svg);
    expect(t).toEqual(expect.arrayContaining(['step', 'loss']));
    expect(t).not.toContain('learning rate');
  });

  it('throws a clear error when there is nothing to plot', () => {
    expect(() => renderTrainingPlotSvg([])).toThrow(/nothing to plot/);
    expect(() => renderTrainingPlotSvg([{ step: 1, grad_norm: 2 }, { step: 2, eval_loss: 1 }])).toThrow(
      /nothing to plot.*2 log entries/,
    );
  });

  it('renders a history with a single entry', async () => {
    const svg = renderTrainingPlotSvg([{ step: 1, loss: 2.3, learning_rate: 5e-5 }]);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(texts(svg)).toEqual(expect.arrayContaining(['step', 'loss', 'learning rate']));
    const { channels } = await sharp(Buffer.from(svg)).stats();
    expect(channels.some((c) => c.max > c.min)).toBe(true);
  });
});

describe('writeTrainingPlots', () => {
  it('writes training_curves.svg and a crisp, non-blank 1200x800 training_curves.png', async () => {
    const out = path.join(dir, 'run1', 'plots'); // created on demand
    const res = await writeTrainingPlots(out, syntheticHistory());
    expect(res).toEqual({
      svg: path.join(out, 'training_curves.svg'),
      png: path.join(out, 'training_curves.png'),
    });
    // Exactly the two files: no temporary file left behind.
    expect((await fs.readdir(out)).sort()).toEqual(['training_curves.png', 'training_curves.svg']);

    const svg = await fs.readFile(res.svg, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(texts(svg)).toEqual(expect.arrayContaining(['step', 'loss', 'learning rate']));

    const img = sharp(res.png);
    const meta = await img.metadata();
    expect(meta.format).toBe('png');
    expect([meta.width, meta.height]).toEqual([1200, 800]);
    const stats = await img.stats();
    // White background with dark text and coloured lines: every channel spans (nearly) the full range,
    // and the image is mostly white.
    for (const c of stats.channels.slice(0, 3)) {
      expect(c.max).toBe(255);
      expect(c.min).toBeLessThan(100);
      expect(c.stdev).toBeGreaterThan(5);
      expect(c.mean).toBeGreaterThan(200);
    }
    expect(stats.isOpaque).toBe(true);
    // Both curves are drawn: there are blue (loss) and orange (learning rate) pixels.
    const { data, info } = await sharp(res.png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    let blue = 0;
    let orange = 0;
    for (let i = 0; i < data.length; i += info.channels) {
      const [pr, pb] = [data[i]!, data[i + 2]!];
      if (pb - pr > 80) blue++;
      else if (pr - pb > 80) orange++;
    }
    expect(blue).toBeGreaterThan(500);
    expect(orange).toBeGreaterThan(500);
  });

  it('overwrites existing plots and scales the PNG with the SVG size', async () => {
    const out = path.join(dir, 'run2');
    await writeTrainingPlots(out, syntheticHistory(10));
    const res = await writeTrainingPlots(out, [{ step: 7, loss: 1.25 }], { width: 600, height: 450 });
    expect(await fs.readFile(res.svg, 'utf8')).toContain('width="600"');
    const meta = await sharp(res.png).metadata();
    expect([meta.width, meta.height]).toEqual([800, 600]);
    expect((await fs.readdir(out)).sort()).toEqual(['training_curves.png', 'training_curves.svg']);
  });

  it('rejects (and writes nothing) when there is nothing to plot', async () => {
    const out = path.join(dir, 'run3');
    await expect(writeTrainingPlots(out, [])).rejects.toThrow(/nothing to plot/);
    await expect(fs.access(out)).rejects.toThrow();
  });
});
