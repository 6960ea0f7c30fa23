/**
 * A port of Pillow's separable convolution resampler (`ImagingResample`, 8 bits per channel), written from
 * the algorithm's description: per-axis tap windows and weights computed in float64, weights normalised to
 * sum 1 and converted to 22-bit fixed point, an integer accumulator started at 2^21, the result shifted by
 * 22 and clamped to 0..255. The horizontal pass runs first and its result is stored as uint8; each pass is
 * skipped when its dimension does not change. Bit-exact with Pillow for the convolution filters.
 *
 * Unlike Pillow, the passes can be restricted to a window of the output (a centre crop): each output pixel
 * depends only on its own taps, so computing the cropped region directly gives the same bytes as resizing
 * everything and cropping afterwards, for less work.
 * @internal
 */
import { RESAMPLE_WASM_BASE64 } from './resample-wasm.js';

/** Pillow's resampling filters, by their numeric code in `preprocessor_config.json` (`resample`). */
export const enum PillowFilter {
  Nearest = 0,
  Lanczos = 1,
  Bilinear = 2,
  Bicubic = 3,
  Box = 4,
  Hamming = 5,
}

interface Filter {
  support: number;
  fn: (x: number) => number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

const FILTERS: Record<number, Filter> = {
  [PillowFilter.Box]: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  [PillowFilter.Bilinear]: {
    support: 1,
    fn: (x) => {
      const a = x < 0 ? -x : x;
      return a < 1 ? 1 - a : 0;
    },
  },
  [PillowFilter.Hamming]: {
    support: 1,
    fn: (x) => {
      const a = x < 0 ? -x : x;
      if (a === 0) return 1;
      if (a >= 1) return 0;
      const px = a * Math.PI;
      return (Math.sin(px) / px) * (0.54 + 0.46 * Math.cos(px));
    },
  },
  [PillowFilter.Bicubic]: {
    support: 2,
    fn: (x) => {
      // Keys cubic with a = -0.5, evaluated in Pillow's operation order.
      const a = -0.5;
      const t = x < 0 ? -x : x;
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
  [PillowFilter.Lanczos]: {
    support: 3,
    fn: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0),
  },
};

/** True for the filter codes {@link resampleRgb} implements. */
export function isSupportedFilter(code: number): boolean {
  return code === PillowFilter.Nearest || code in FILTERS;
}

const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** Fixed-point tap windows of one axis for output indices [from, to). */
interface AxisCoeffs {
  /** First input index of each output's window. */
  start: Int32Array;
  /** Window length of each output. */
  len: Int32Array;
  /** `ksize` fixed-point weights per output. */
  weights: Int32Array;
  ksize: number;
}

function axisCoeffs(inSize: number, outSize: number, from: number, to: number, filter: Filter): AxisCoeffs {
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const n = to - from;
  const start = new Int32Array(n);
  const len = new Int32Array(n);
  const weights = new Int32Array(n * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterScale;
  for (let o = from; o < to; o++) {
    const center = (o + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    const base = (o - from) * ksize;
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x]! / ww : k[x]!;
      weights[base + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    start[o - from] = xmin;
    len[o - from] = xmax;
  }
  return { start, len, weights, ksize };
}

function clip8(acc: number): number {
  if (acc >= ONE * 256) return 255;
  if (acc <= 0) return 0;
  return acc >> PRECISION_BITS;
}

/** A window of the resized image: output columns [x0, x0 + w) and rows [y0, y0 + h). */
export interface OutputWindow {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

/**
 * Resizes an interleaved RGB uint8 image (`width` x `height`) to `outW` x `outH` with a Pillow filter and
 * returns only `window` of the result (default: all of it), as interleaved RGB uint8.
 */
export function resampleRgb(
  src: Uint8Array,
  width: number,
  height: number,
  outW: number,
  outH: number,
  filterCode: number,
  window: OutputWindow = { x0: 0, y0: 0, w: outW, h: outH },
): Uint8Array {
  const { x0, y0, w: ww, h: wh } = window;
  if (filterCode === PillowFilter.Nearest) return nearest(src, width, height, outW, outH, window);
  const filter = FILTERS[filterCode];
  if (!filter) throw new RangeError(`unsupported Pillow filter ${filterCode}`);

  const needH = outW !== width;
  const needV = outH !== height;
  // Vertical taps decide which source rows the horizontal pass must produce.
  const vc = needV ? axisCoeffs(height, outH, y0, y0 + wh, filter) : undefined;
  let rowFirst: number;
  let rowLast: number;
  if (vc) {
    rowFirst = vc.start[0]!;
    rowLast = vc.start[wh - 1]! + vc.len[wh - 1]!;
    for (let i = 0; i < wh; i++) {
      rowFirst = Math.min(rowFirst, vc.start[i]!);
      rowLast = Math.max(rowLast, vc.start[i]! + vc.len[i]!);
    }
  } else {
    rowFirst = y0;
    rowLast = y0 + wh;
  }
  const rows = rowLast - rowFirst;
  const hc = needH ? axisCoeffs(width, outW, x0, x0 + ww, filter) : undefined;
  const k = engine === 'js' ? null : kernels();
  if (k) return resampleWasm(k, src, width, rowFirst, rows, x0, ww, wh, hc, vc);

  // Horizontal pass: rows [rowFirst, rowLast), output columns [x0, x0 + ww), stored as uint8.
  const tmpStride = ww * 3;
  const tmp = new Uint8Array(rows * tmpStride);
  if (hc) {
    const { start, len, weights, ksize } = hc;
    for (let r = 0; r < rows; r++) {
      const rowBase = (rowFirst + r) * width * 3;
      const outBase = r * tmpStride;
      for (let o = 0; o < ww; o++) {
        let a0 = HALF;
        let a1 = HALF;
        let a2 = HALF;
        const kb = o * ksize;
        const n = len[o]!;
        let p = rowBase + start[o]! * 3;
        // |acc| < 2^31 always (255 * sum|w| * 2^22 with sum|w| < 1.3), so int32 arithmetic is exact
        for (let t = 0; t < n; t++, p += 3) {
          const wgt = weights[kb + t]!;
          a0 = (a0 + Math.imul(src[p]!, wgt)) | 0;
          a1 = (a1 + Math.imul(src[p + 1]!, wgt)) | 0;
          a2 = (a2 + Math.imul(src[p + 2]!, wgt)) | 0;
        }
        const q = outBase + o * 3;
        tmp[q] = clip8(a0);
        tmp[q + 1] = clip8(a1);
        tmp[q + 2] = clip8(a2);
      }
    }
  } else {
    copyWindow(src, width, rowFirst, rows, x0, ww, tmp);
  }
  if (!vc) return tmp;

  // Vertical pass: output rows [y0, y0 + wh), reading tmp rows relative to rowFirst.
  const out = new Uint8Array(wh * tmpStride);
  const acc = new Int32Array(tmpStride);
  const { start, len, weights, ksize } = vc;
  for (let o = 0; o < wh; o++) {
    acc.fill(HALF);
    const n = len[o]!;
    const kb = o * ksize;
    const r0 = start[o]! - rowFirst;
    for (let t = 0; t < n; t++) {
      const wgt = weights[kb + t]!;
      const rb = (r0 + t) * tmpStride;
      for (let i = 0; i < tmpStride; i++) acc[i] = (acc[i]! + Math.imul(tmp[rb + i]!, wgt)) | 0;
    }
    const ob = o * tmpStride;
    for (let i = 0; i < tmpStride; i++) out[ob + i] = clip8(acc[i]!);
  }
  return out;
}

/** Copies columns [x0, x0 + w) of rows [rowFirst, rowFirst + rows) of an RGB image into `dst`. */
function copyWindow(src: Uint8Array, width: number, rowFirst: number, rows: number, x0: number, w: number, dst: Uint8Array, dstOffset = 0): void {
  const stride = w * 3;
  for (let r = 0; r < rows; r++) {
    const s = ((rowFirst + r) * width + x0) * 3;
    dst.set(src.subarray(s, s + stride), dstOffset + r * stride);
  }
}

// ---- WebAssembly SIMD kernels -----------------------------------------------------------------------------

// The project's TypeScript lib (ES2023, no DOM) has no WebAssembly typings: declare what is used.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
};

interface Kernels {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  hpass(src: number, width: number, rows: number, start: number, pairs: number, wvec: number, maxPairs: number, outW: number, tmp: number): void;
  vpass(tmp: number, stride: number, start: number, len: number, weights: number, ksize: number, outH: number, rowFirst: number, out: number, acc: number): void;
}

let loaded: Kernels | null | undefined;

/** The SIMD kernels, or null where WebAssembly SIMD is unavailable (the JavaScript loops are used then). */
function kernels(): Kernels | null {
  if (loaded !== undefined) return loaded;
  try {
    const module = new WebAssembly.Module(Buffer.from(RESAMPLE_WASM_BASE64, 'base64'));
    const instance = new WebAssembly.Instance(module, {
      env: { abort: () => { throw new Error('resample kernel aborted'); } },
    });
    loaded = instance.exports as unknown as Kernels;
  } catch {
    loaded = null;
  }
  return loaded;
}

/** Which implementation {@link resampleRgb} uses: `auto` (SIMD when available) or `js`. */
export type ResampleEngine = 'auto' | 'js';
let engine: ResampleEngine = 'auto';

/** Chooses the resampling implementation (both give identical bytes); returns the previous choice. */
export function setResampleEngine(e: ResampleEngine): ResampleEngine {
  const prev = engine;
  engine = e;
  return prev;
}

/** True when the WebAssembly SIMD kernels are in use under `auto`. */
export function simdAvailable(): boolean {
  return kernels() !== null;
}

/** Kernel memory starts above the module's own static data (first page). */
const BASE = 65536;
const align16 = (n: number) => (n + 15) & ~15;

/**
 * The horizontal taps as the SIMD kernel reads them: taps in pairs, each weight split into hi * 2048 + lo,
 * laid out as two i16x8 vectors [hi0 hi1 hi0 hi1 hi0 hi1 0 0] and [lo0 lo1 ...] per pair.
 */
function pairVectors(c: AxisCoeffs): { pairs: Int32Array; vectors: Int16Array; maxPairs: number } {
  const n = c.len.length;
  const maxPairs = Math.ceil(c.ksize / 2);
  const pairs = new Int32Array(n);
  const vectors = new Int16Array(n * maxPairs * 16);
  for (let o = 0; o < n; o++) {
    const len = c.len[o]!;
    pairs[o] = Math.ceil(len / 2);
    for (let t = 0; t < len; t++) {
      const w = c.weights[o * c.ksize + t]!;
      const hi = w >> 11;
      const lo = w & 2047;
      const base = (o * maxPairs + (t >> 1)) * 16 + (t & 1);
      for (let ch = 0; ch < 3; ch++) {
        vectors[base + ch * 2] = hi;
        vectors[base + 8 + ch * 2] = lo;
      }
    }
  }
  return { pairs, vectors, maxPairs };
}

function resampleWasm(
  k: Kernels, src: Uint8Array, width: number, rowFirst: number, rows: number, x0: number, ww: number, wh: number,
  hc: AxisCoeffs | undefined, vc: AxisCoeffs | undefined,
): Uint8Array {
  const stride = ww * 3;
  let off = BASE;
  const take = (bytes: number) => {
    const at = off;
    off += align16(bytes + 16); // every buffer gets 16 readable bytes of slack
    return at;
  };
  const srcAt = hc ? take(rows * width * 3) : 0;
  const hv = hc ? pairVectors(hc) : undefined;
  const hAt = hv ? [take(hc!.start.byteLength), take(hv.pairs.byteLength), take(hv.vectors.byteLength)] : [];
  const tmpAt = take(rows * stride);
  const vAt = vc ? [take(vc.start.byteLength), take(vc.len.byteLength), take(vc.weights.byteLength)] : [];
  const outAt = vc ? take(wh * stride + 8) : 0;
  const accAt = vc ? take(((stride + 7) & ~7) * 4 + 32) : 0;
  const have = k.memory.buffer.byteLength;
  if (off > have) k.memory.grow(Math.ceil((off - have) / 65536));
  const heap = new Uint8Array(k.memory.buffer);
  const i32 = (at: number, a: Int32Array | Int16Array) => heap.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
  if (hc && hv) {
    heap.set(src.subarray(rowFirst * width * 3, (rowFirst + rows) * width * 3), srcAt);
    heap.fill(0, srcAt + rows * width * 3, srcAt + rows * width * 3 + 16);
    i32(hAt[0]!, hc.start);
    i32(hAt[1]!, hv.pairs);
    i32(hAt[2]!, hv.vectors);
    k.hpass(srcAt, width, rows, hAt[0]!, hAt[1]!, hAt[2]!, hv.maxPairs, ww, tmpAt);
  } else {
    copyWindow(src, width, rowFirst, rows, x0, ww, heap, tmpAt);
  }
  if (!vc) return heap.slice(tmpAt, tmpAt + rows * stride);
  i32(vAt[0]!, vc.start);
  i32(vAt[1]!, vc.len);
  i32(vAt[2]!, vc.weights);
  k.vpass(tmpAt, stride, vAt[0]!, vAt[1]!, vAt[2]!, vc.ksize, wh, rowFirst, outAt, accAt);
  return heap.slice(outAt, outAt + wh * stride);
}

/** Pillow's NEAREST resize: source index floor((o + 0.5) * scale). */
function nearest(src: Uint8Array, width: number, height: number, outW: number, outH: number, win: OutputWindow): Uint8Array {
  const out = new Uint8Array(win.w * win.h * 3);
  const sx = width / outW;
  const sy = height / outH;
  for (let y = 0; y < win.h; y++) {
    const iy = Math.min(height - 1, Math.floor((win.y0 + y + 0.5) * sy));
    for (let x = 0; x < win.w; x++) {
      const ix = Math.min(width - 1, Math.floor((win.x0 + x + 0.5) * sx));
      const s = (iy * width + ix) * 3;
      const d = (y * win.w + x) * 3;
      out[d] = src[s]!;
      out[d + 1] = src[s + 1]!;
      out[d + 2] = src[s + 2]!;
    }
  }
  return out;
}
