/**
 * Band-limited resampling: a windowed-sinc polyphase filter with the same kernel as torchaudio's
 * `functional.resample` ("sinc_interpolation": `lowpass_filter_width` 6, `rolloff` 0.99, a Hann window
 * `cos^2(pi t / (2 w))`), computed in float64. Output length is `ceil(len * new / orig)`.
 *
 * For rates reduced by their gcd to `orig / new`, output sample `i * new + j` is the dot product of phase
 * `j`'s kernel with the input around `i * orig`. torchaudio stores each phase as a dense row of
 * `2 * width + orig` taps and convolves with all of them; only about `2 * width` of them are inside the
 * window, so here each phase keeps just its non-zero taps (44.1 -> 16 kHz: 34 instead of 475 per output).
 * @module
 */

/** Options of the sinc resampler (torchaudio's names and defaults). */
export interface SincResampleOptions {
  /** Zero crossings of the sinc on each side; sharper filter, more taps. Default 6. */
  lowpassFilterWidth?: number;
  /** Cut-off as a fraction of the lower Nyquist frequency. Default 0.99. */
  rolloff?: number;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** A precomputed resampling kernel from one rate to another; reusable for any number of signals. */
export class SincResampler {
  /** Reduced input rate, `origFreq / gcd`. */
  readonly orig: number;
  /** Reduced output rate (the number of phases), `newFreq / gcd`. */
  readonly new: number;
  /** torchaudio's `width`: padding on each side, in input samples. */
  readonly width: number;
  /** Per phase: index of the first tap relative to `i * orig - width`. */
  private readonly firstTap: Int32Array;
  /** Per phase: start of its taps in {@link taps}. */
  private readonly offsets: Int32Array;
  private readonly taps: Float64Array;

  constructor(
    /** Input rate, Hz (positive integer). */
    readonly origFreq: number,
    /** Output rate, Hz (positive integer). */
    readonly newFreq: number,
    options: SincResampleOptions = {},
  ) {
    if (!Number.isInteger(origFreq) || origFreq <= 0 || !Number.isInteger(newFreq) || newFreq <= 0) {
      throw new RangeError(`sample rates must be positive integers, got ${origFreq} -> ${newFreq}`);
    }
    const lpw = options.lowpassFilterWidth ?? 6;
    const rolloff = options.rolloff ?? 0.99;
    if (!(lpw > 0) || !(rolloff > 0 && rolloff <= 1)) throw new RangeError('lowpassFilterWidth must be > 0 and rolloff in (0, 1]');
    const g = gcd(origFreq, newFreq);
    const orig = (this.orig = origFreq / g);
    const nw = (this.new = newFreq / g);
    const base = Math.min(orig, nw) * rolloff;
    const width = (this.width = Math.ceil((lpw * orig) / base));
    const scale = base / orig;
    const total = 2 * width + orig;
    this.firstTap = new Int32Array(nw);
    this.offsets = new Int32Array(nw + 1);
    const taps: number[] = [];
    for (let j = 0; j < nw; j++) {
      this.offsets[j] = taps.length;
      let first = -1;
      const row: number[] = [];
      for (let k = 0; k < total; k++) {
        // t = (idx - j / new) * base, idx = (k - width) / orig; zero at and beyond |t| = lpw (the window's zeros)
        const t = ((k - width) / orig - j / nw) * base;
        if (!(Math.abs(t) < lpw)) {
          if (first >= 0) break;
          continue;
        }
        if (first < 0) first = k;
        const window = Math.cos((t * Math.PI) / lpw / 2) ** 2;
        const x = t * Math.PI;
        row.push((x === 0 ? 1 : Math.sin(x) / x) * window * scale);
      }
      this.firstTap[j] = Math.max(first, 0);
      taps.push(...row);
    }
    this.offsets[nw] = taps.length;
    this.taps = Float64Array.from(taps);
  }

  /** Output length for an input of `n` samples: `ceil(n * new / orig)`. */
  outputLength(n: number): number {
    return Math.ceil((n * this.new) / this.orig);
  }

  /** Resamples `x` (mono). Returns a new array of {@link outputLength} samples. */
  process(x: Float32Array): Float32Array {
    const L = x.length;
    const outLen = this.outputLength(L);
    const y = new Float32Array(outLen);
    const { orig, new: nw, width, firstTap, offsets, taps } = this;
    for (let j = 0; j < nw; j++) {
      const o0 = offsets[j]!;
      const nt = offsets[j + 1]! - o0;
      const shift = firstTap[j]! - width;
      for (let m = j, i = 0; m < outLen; m += nw, i++) {
        const s = i * orig + shift; // input index of tap 0
        let acc = 0;
        if (s >= 0 && s + nt <= L) {
          for (let q = 0; q < nt; q++) acc += taps[o0 + q]! * x[s + q]!;
        } else {
          const q0 = Math.max(0, -s);
          const q1 = Math.min(nt, L - s);
          for (let q = q0; q < q1; q++) acc += taps[o0 + q]! * x[s + q]!;
        }
        y[m] = acc;
      }
    }
    return y;
  }
}

const cache = new Map<string, SincResampler>();
const CACHE_SIZE = 8;

/** A cached {@link SincResampler} for a rate pair (the last few are kept). */
export function getResampler(origFreq: number, newFreq: number, options: SincResampleOptions = {}): SincResampler {
  const key = `${origFreq}:${newFreq}:${options.lowpassFilterWidth ?? 6}:${options.rolloff ?? 0.99}`;
  let r = cache.get(key);
  if (r) {
    cache.delete(key);
  } else {
    r = new SincResampler(origFreq, newFreq, options);
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value!);
  }
  cache.set(key, r);
  return r;
}

/**
 * Resamples mono float32 audio from `origFreq` to `newFreq` with torchaudio's default windowed-sinc kernel.
 * Returns `x` itself when the rates are equal.
 */
export function resample(x: Float32Array, origFreq: number, newFreq: number, options: SincResampleOptions = {}): Float32Array {
  if (origFreq === newFreq) return x;
  return getResampler(origFreq, newFreq, options).process(x);
}
