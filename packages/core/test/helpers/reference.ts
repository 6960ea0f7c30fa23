/** Plain-JavaScript reference maths for the core tests (no tfjs). */

/** Seeded PRNG (mulberry32), uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform values in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/**
 * erf to double precision: Taylor series for |x| < 3, continued fraction of erfc beyond (both converge to
 * well below 1e-15 there).
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + k / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** Exact GELU: x/2 (1 + erf(x / sqrt 2)). */
export function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** The tanh approximation of GELU (what the projector must NOT compute). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/** y[r, o] = sum_i x[r, i] W[o, i] + b[o], for `rows` rows; W is (out, in) as Hugging Face stores it. */
export function linearRef(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, b: ArrayLike<number>, inDim: number, outDim: number): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b[o]!;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i]! * w[o * inDim + i]!;
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/** y = x W for x (rows, inDim) and W (inDim, outDim), no bias. */
export function matmulRef(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, inDim: number, outDim: number): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i]! * w[i * outDim + o]!;
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/**
 * Pixel shuffle by explicit loops: x is [b, g*g, c] with tokens in row-major (y, x) order; output token
 * (Y, X) of the (g/f) x (g/f) grid holds, for dy then dx then channel, input token (Y*f+dy, X*f+dx).
 */
export function pixelShuffleRef(x: ArrayLike<number>, b: number, g: number, c: number, f: number): Float64Array {
  const h = g / f;
  const out = new Float64Array(b * h * h * c * f * f);
  let k = 0;
  for (let n = 0; n < b; n++) {
    for (let Y = 0; Y < h; Y++) {
      for (let X = 0; X < h; X++) {
        for (let dy = 0; dy < f; dy++) {
          for (let dx = 0; dx < f; dx++) {
            const token = (Y * f + dy) * g + (X * f + dx);
            for (let ch = 0; ch < c; ch++) out[k++] = x[(n * g * g + token) * c + ch]!;
          }
        }
      }
    }
  }
  return out;
}

export { maxAbsDiff } from '../../../../test/helpers/fixtures.js';
