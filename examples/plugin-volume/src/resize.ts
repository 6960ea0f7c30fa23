/**
 * Volume arithmetic used by the processor, in plain JavaScript (processors run on the CPU, possibly in a
 * worker thread, and never touch the tfjs backend).
 * @module
 */
import type { Triple } from './config.js';

/** Source indices and weights of a linear resize along one axis. */
interface AxisTaps {
  lo: Int32Array;
  hi: Int32Array;
  w: Float64Array;
}

/**
 * Linear-interpolation taps for resizing an axis of `inSize` samples to `outSize`, with half-pixel
 * centres (PyTorch's `align_corners=False`): output `o` samples the input at `(o + 0.5) * in / out - 0.5`,
 * clamped at 0 below and at the last sample above.
 */
function axisTaps(inSize: number, outSize: number): AxisTaps {
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const w = new Float64Array(outSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const src = Math.max(0, (o + 0.5) * scale - 0.5);
    const i = Math.min(Math.floor(src), inSize - 1);
    lo[o] = i;
    hi[o] = Math.min(i + 1, inSize - 1);
    w[o] = Math.min(Math.max(src - i, 0), 1);
  }
  return { lo, hi, w };
}

/** Resizes one axis of a C-order array `[outer, n, inner]` to `[outer, m, inner]`. */
function resizeAxis(src: Float32Array, outer: number, n: number, inner: number, m: number): Float32Array {
  if (n === m) return src;
  const { lo, hi, w } = axisTaps(n, m);
  const out = new Float32Array(outer * m * inner);
  for (let a = 0; a < outer; a++) {
    const sBase = a * n * inner;
    const dBase = a * m * inner;
    for (let o = 0; o < m; o++) {
      const s0 = sBase + lo[o]! * inner;
      const s1 = sBase + hi[o]! * inner;
      const t = w[o]!;
      const d = dBase + o * inner;
      for (let k = 0; k < inner; k++) out[d + k] = src[s0 + k]! * (1 - t) + src[s1 + k]! * t;
    }
  }
  return out;
}

/**
 * Trilinear resize of a `[D, H, W]` volume to `size`, matching `torch.nn.functional.interpolate(...,
 * mode="trilinear", align_corners=False)`. Trilinear interpolation is separable, so it runs as three
 * linear passes (W, then H, then D). Returns a new array (a copy when the size is unchanged).
 */
export function trilinearResize(data: Float32Array, shape: Triple, size: Triple): Float32Array {
  const [d, h, w] = shape;
  const [D, H, W] = size;
  if (data.length !== d * h * w) throw new RangeError(`data has ${data.length} values, shape ${shape.join('x')} needs ${d * h * w}`);
  let x = resizeAxis(data, d * h, w, 1, W);
  x = resizeAxis(x, d, h, W, H);
  x = resizeAxis(x, 1, d, H * W, D);
  return x === data ? data.slice() : x;
}

/** Minimum and maximum of an array; when a value is NaN or infinite, `firstBad` is its index (and min/max are NaN). */
export function finiteRange(data: Float32Array): { min: number; max: number; firstBad?: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) return { min: NaN, max: NaN, firstBad: i };
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/** Scales `data` in place to [0, 1] by its own minimum and maximum; a constant volume becomes all zeros. */
export function minMaxScale(data: Float32Array): Float32Array {
  const { min, max } = finiteRange(data);
  const span = max - min;
  if (!(span > 0)) return data.fill(0);
  for (let i = 0; i < data.length; i++) data[i] = (data[i]! - min) / span;
  return data;
}
