/**
 * Training curves: the loss and the learning rate of a run's log history, drawn with Apache ECharts'
 * server-side SVG renderer (no DOM, no canvas) and rasterised to PNG with sharp.
 *
 * ECharts is imported through its tree-shakable entry points (`echarts/core` plus the line chart, the
 * grid/title/legend components and the SVG renderer, registered with `echarts.use`). The package is
 * ESM-only for `import` (`"type": "module"`, `exports["."].import` is `./index.js`), so a namespace import
 * works under plain Node ESM and under ts-jest ESM alike; the `echarts/core` route additionally loads only
 * what we draw with and makes the SVG renderer an explicit dependency instead of a side effect of the
 * full bundle.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import * as echarts from 'echarts/core';
import { LineChart } from 'echarts/charts';
import { GridComponent, LegendComponent, TitleComponent } from 'echarts/components';
// Type-only (erased): the axis option types are only re-exported by the full entry point.
import type { XAXisComponentOption, YAXisComponentOption } from 'echarts';
import { SVGRenderer } from 'echarts/renderers';
import type { ComposeOption } from 'echarts/core';
import type { LineSeriesOption } from 'echarts/charts';
import type {
  GridComponentOption,
  LegendComponentOption,
  TitleComponentOption,
} from 'echarts/components';

echarts.use([LineChart, GridComponent, LegendComponent, TitleComponent, SVGRenderer]);

type ChartOption = ComposeOption<
  LineSeriesOption | GridComponentOption | LegendComponentOption | TitleComponentOption
>;
type XAxisOption = XAXisComponentOption;
type YAxisOption = YAXisComponentOption;

/** One logged training step (the shape of a trainer's `log_history` entry). */
export interface LogEntry {
  step: number;
  epoch?: number;
  loss?: number;
  grad_norm?: number;
  learning_rate?: number;
  [k: string]: unknown;
}

export interface PlotOptions {
  /** Chart title; defaults to "Training curves". */
  title?: string;
  /** SVG width in px (default 900). The PNG is rasterised at {@link PNG_SCALE} times this. */
  width?: number;
  /** SVG height in px (default 600). */
  height?: number;
}

/** Default SVG size; with {@link PNG_SCALE} the PNG comes out at 1200x800 px. */
export const DEFAULT_PLOT_WIDTH = 900;
export const DEFAULT_PLOT_HEIGHT = 600;
/** The PNG is rendered at 96 dpi (the SVG's px are 72 dpi to librsvg), i.e. 4/3 of the SVG size. */
export const PNG_SCALE = 4 / 3;

/** Series get point symbols when they have at most this many points; more points draw a plain line. */
const SYMBOL_MAX_POINTS = 30;
const FONT_FAMILY = 'sans-serif';
const LOSS_COLOR = '#1f4f9f';
const LOSS_RAW_COLOR = '#9db8e3';
const LR_COLOR = '#d9661f';
const AXIS_COLOR = '#444';
const GRID_LINE_COLOR = '#e3e3e3';

type Point = [number, number];

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** The `(step, value)` points of one field, sorted by step; entries without a finite value are skipped. */
function seriesOf(history: readonly LogEntry[], key: 'loss' | 'learning_rate'): Point[] {
  const pts: Point[] = [];
  for (const e of history) {
    const v = e[key];
    if (isNum(e.step) && isNum(v)) pts.push([e.step, v]);
  }
  return pts.sort((a, b) => a[0] - b[0]);
}

/**
 * Centred moving average over `2 * half + 1` points (fewer, still centred, at the ends). Unlike an exponential moving
 * average it does not lag behind a falling loss, which matters for a plot drawn after the fact.
 */
function smooth(pts: readonly Point[], half: number): Point[] {
  const prefix = [0];
  for (const [, y] of pts) prefix.push(prefix[prefix.length - 1]! + y);
  return pts.map(([x], i) => {
    // The window shrinks symmetrically at the ends, so the smoothed line does not drift off a slope.
    const h = Math.min(half, i, pts.length - 1 - i);
    const lo = i - h;
    const hi = i + h;
    return [x, (prefix[hi + 1]! - prefix[lo]!) / (hi - lo + 1)];
  });
}

// Loops rather than Math.min(...xs): a long run's history must not overflow the argument stack.
function minOf(xs: readonly number[]): number {
  let m = Infinity;
  for (const x of xs) if (x < m) m = x;
  return m;
}

function maxOf(xs: readonly number[]): number {
  let m = -Infinity;
  for (const x of xs) if (x > m) m = x;
  return m;
}

/** A "nice" number (1, 2, 2.5, 5 times a power of ten) close to `x`. */
function niceStep(x: number): number {
  const exp = Math.floor(Math.log10(x));
  const f = x / 10 ** exp;
  const nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return nf * 10 ** exp;
}

/** A shared step-axis extent (both panels get exactly the same ticks) on round numbers. */
function stepExtent(steps: readonly number[]): { min: number; max: number; interval: number } {
  let lo = minOf(steps);
  let hi = maxOf(steps);
  if (hi === lo) {
    const pad = Math.max(1, Math.abs(lo) * 0.1);
    lo -= pad;
    hi += pad;
    if (minOf(steps) >= 0 && lo < 0) lo = 0;
  }
  const interval = Math.max(niceStep((hi - lo) / 6), Number.isInteger(lo) && Number.isInteger(hi) ? 1 : 0);
  return {
    min: Math.floor(lo / interval) * interval,
    max: Math.ceil(hi / interval) * interval,
    interval,
  };
}

/** `1e-4`, `2.5e-4`, `0` ... (at most 3 significant digits). */
function sci(v: number): string {
  if (v === 0) return '0';
  return Number(v.toPrecision(3)).toExponential().replace('e+', 'e');
}

function plain(v: number): string {
  return String(Number(v.toPrecision(4)));
}

function fmt(v: number): string {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? sci(v) : plain(v);
}

/**
 * Renders the loss curve and the learning-rate curve of a run as an SVG string: two stacked panels
 * sharing the step axis (loss on top, learning rate below; a single panel if only one of them was
 * logged). Entries without `loss` / `learning_rate` (or with a non-finite one) are skipped for that
 * series. With more than {@link SYMBOL_MAX_POINTS} loss points a smoothed loss (centred moving
 * average) is drawn over the (lighter) raw loss.
 *
 * @throws Error if no entry has a finite `loss` or `learning_rate`.
 */
export function renderTrainingPlotSvg(history: readonly LogEntry[], options: PlotOptions = {}): string {
  const width = Math.round(options.width ?? DEFAULT_PLOT_WIDTH);
  const height = Math.round(options.height ?? DEFAULT_PLOT_HEIGHT);
  if (!(width >= 200 && height >= 150)) {
    throw new Error(`renderTrainingPlotSvg: plot size ${width}x${height} is too small (min 200x150)`);
  }
  const loss = seriesOf(history, 'loss');
  const lr = seriesOf(history, 'learning_rate');
  if (loss.length === 0 && lr.length === 0) {
    throw new Error(
      `renderTrainingPlotSvg: nothing to plot: none of the ${history.length} log entries has a finite ` +
        '`loss` or `learning_rate`',
    );
  }

  const panels: Array<'loss' | 'lr'> = [];
  if (loss.length > 0) panels.push('loss');
  if (lr.length > 0) panels.push('lr');

  // Subtitle: the run at a glance.
  const facts: string[] = [];
  const steps = [...loss, ...lr].map((p) => p[0]);
  const firstStep = minOf(steps);
  const lastStep = maxOf(steps);
  facts.push(
    firstStep === lastStep ? `step ${plain(firstStep)}` : `steps ${plain(firstStep)}–${plain(lastStep)}`,
  );
  const lastEpoch = [...history].reverse().find((e) => isNum(e.epoch))?.epoch;
  if (isNum(lastEpoch)) facts.push(`epoch ${plain(Number(lastEpoch.toFixed(2)))}`);
  if (loss.length > 0) {
    facts.push(`final loss ${fmt(loss[loss.length - 1]![1])}`);
    facts.push(`min loss ${fmt(minOf(loss.map((p) => p[1])))}`);
  }

  const x = stepExtent(steps);

  // Layout in px: title/legend band on top, step-axis labels and name at the bottom.
  const top = 70;
  const bottom = 52;
  const left = 92;
  const right = 30;
  const gap = 26;
  const avail = height - top - bottom - (panels.length - 1) * gap;
  const heights = panels.length === 2 ? [Math.round(avail * 0.6), avail - Math.round(avail * 0.6)] : [avail];

  const grid: GridComponentOption[] = [];
  const xAxis: XAxisOption[] = [];
  const yAxis: YAxisOption[] = [];
  const series: LineSeriesOption[] = [];
  const legend: string[] = [];
  const textStyle = { fontFamily: FONT_FAMILY, color: AXIS_COLOR, fontSize: 12 };
  const nameTextStyle = { fontFamily: FONT_FAMILY, color: '#222', fontSize: 13 };

  let y0 = top;
  panels.forEach((panel, i) => {
    const isLast = i === panels.length - 1;
    grid.push({ left, right, top: y0, height: heights[i]!, containLabel: false });
    y0 += heights[i]! + gap;
    xAxis.push({
      type: 'value',
      gridIndex: i,
      min: x.min,
      max: x.max,
      interval: x.interval,
      name: isLast ? 'step' : '',
      nameLocation: 'middle',
      nameGap: 28,
      nameTextStyle,
      axisLabel: { show: isLast, ...textStyle, formatter: (v: number) => plain(v) },
      axisTick: { show: true, inside: !isLast },
      axisLine: { onZero: false, lineStyle: { color: '#888' } },
      splitLine: { show: true, lineStyle: { color: GRID_LINE_COLOR } },
    });
    if (panel === 'loss') {
      yAxis.push({
        type: 'value',
        gridIndex: i,
        scale: true,
        name: 'loss',
        nameLocation: 'middle',
        nameGap: 62,
        nameTextStyle,
        splitNumber: 5,
        axisLabel: { ...textStyle, formatter: (v: number) => fmt(v) },
        axisLine: { show: true, lineStyle: { color: '#888' } },
        splitLine: { lineStyle: { color: GRID_LINE_COLOR } },
      });
      const many = loss.length > SYMBOL_MAX_POINTS;
      series.push({
        type: 'line',
        name: 'loss',
        xAxisIndex: i,
        yAxisIndex: i,
        data: loss,
        showSymbol: !many,
        symbol: 'circle',
        symbolSize: 5,
        // Very long runs: keep the peaks and troughs, drop what cannot be told apart at this width.
        sampling: 'lttb',
        // Under a smoothed line the raw loss is drawn lighter (a solid light colour, so the legend swatch
        // matches the line).
        color: many ? LOSS_RAW_COLOR : LOSS_COLOR,
        lineStyle: { width: many ? 1.2 : 1.8 },
        z: 2,
      });
      legend.push('loss');
      if (many) {
        series.push({
          type: 'line',
          name: 'loss (smoothed)',
          xAxisIndex: i,
          yAxisIndex: i,
          data: smooth(loss, Math.max(2, Math.round(loss.length / 50))),
          showSymbol: false,
          sampling: 'lttb',
          color: LOSS_COLOR,
          lineStyle: { width: 2.2 },
          z: 3,
        });
        legend.push('loss (smoothed)');
      }
    } else {
      const lrMax = maxOf(lr.map((p) => Math.abs(p[1])));
      const useSci = lrMax < 1e-2 || lrMax >= 1e4;
      yAxis.push({
        type: 'value',
        gridIndex: i,
        name: 'learning rate',
        nameLocation: 'middle',
        nameGap: 62,
        nameTextStyle,
        splitNumber: panels.length === 2 ? 3 : 5,
        axisLabel: { ...textStyle, formatter: (v: number) => (useSci ? sci(v) : plain(v)) },
        axisLine: { show: true, lineStyle: { color: '#888' } },
        splitLine: { lineStyle: { color: GRID_LINE_COLOR } },
      });
      const many = lr.length > SYMBOL_MAX_POINTS;
      series.push({
        type: 'line',
        name: 'learning rate',
        xAxisIndex: i,
        yAxisIndex: i,
        data: lr,
        showSymbol: !many,
        symbol: 'circle',
        symbolSize: 5,
        sampling: 'lttb',
        color: LR_COLOR,
        lineStyle: { width: 1.8 },
        z: 2,
      });
      legend.push('learning rate');
    }
  });

  // Keep the title and the subtitle clear of the legend (top right): estimate the legend's width
  // (DejaVu Sans averages ~0.6 em per character) and truncate the title with an ellipsis beyond it.
  // Without a canvas, ECharts measures text with Helvetica-like widths, ~25% narrower than DejaVu
  // Sans Bold as librsvg renders it: hence the 1.3 margin on the width given to the truncation.
  const legendWidth =
    legend.reduce((w, name) => w + 22 + 5 + name.length * 7.2, 0) + 16 * (legend.length - 1);
  const titleWidth = Math.max(80, (width - (left - 8) - right - legendWidth - 24) / 1.3);

  const option: ChartOption = {
    animation: false,
    backgroundColor: '#ffffff',
    textStyle: { fontFamily: FONT_FAMILY },
    title: {
      text: options.title ?? 'Training curves',
      subtext: facts.join('  ·  '),
      left: left - 8,
      top: 8,
      itemGap: 6,
      textStyle: {
        fontFamily: FONT_FAMILY,
        fontSize: 16,
        fontWeight: 'bold',
        color: '#111',
        width: titleWidth,
        overflow: 'truncate',
      },
      // The subtitle's row is below the legend's: it may use the whole width.
      subtextStyle: {
        fontFamily: FONT_FAMILY,
        fontSize: 12,
        color: '#555',
        width: (width - (left - 8) - right) / 1.15,
        overflow: 'truncate',
      },
    },
    legend: {
      data: legend,
      right: right,
      top: 14,
      // Line swatches (a short thick bar) rather than the default line-with-symbol icon.
      icon: 'rect',
      itemWidth: 22,
      itemHeight: 3,
      itemGap: 16,
      textStyle: { fontFamily: FONT_FAMILY, fontSize: 12, color: '#333' },
    },
    grid,
    xAxis,
    yAxis,
    series,
  };

  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width, height });
  try {
    chart.setOption(option);
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

async function writeAtomic(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Writes `<dir>/training_curves.svg` and `<dir>/training_curves.png` (the PNG rasterised from the SVG by
 * sharp at 96 dpi, i.e. {@link PNG_SCALE} times the SVG size: 1200x800 px with the default size). Each
 * file is written atomically (temporary file, then rename); `dir` is created if needed.
 *
 * @returns the paths of the two files.
 */
export async function writeTrainingPlots(
  dir: string,
  history: readonly LogEntry[],
  options: PlotOptions = {},
): Promise<{ svg: string; png: string }> {
  const svgText = renderTrainingPlotSvg(history, options);
  const png = await sharp(Buffer.from(svgText), { density: 72 * PNG_SCALE })
    .flatten({ background: '#ffffff' })
    .png({ compressionLevel: 9 })
    .toBuffer();
  await fs.mkdir(dir, { recursive: true });
  const svgPath = path.join(dir, 'training_curves.svg');
  const pngPath = path.join(dir, 'training_curves.png');
  await writeAtomic(svgPath, svgText);
  await writeAtomic(pngPath, png);
  return { svg: svgPath, png: pngPath };
}
