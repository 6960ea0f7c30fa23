/**
 * A fast, accurate log10 for positive normal float32 values.
 *
 * `Math.log10` costs ~20 ns per call in V8 here (5 ms per 30 s Whisper window of 80 x 3000 values, a third of
 * the whole log-mel budget). This splits x = 2^e * m, m in [1, 2), from its IEEE bits (exact) and evaluates
 * ln m = 2 atanh(s), s = (m - 1)/(m + 1) in [0, 1/3), with seven terms of the odd series (truncation error
 * < 1e-8, below float32 resolution). No branch, no table: about 2-3x faster than Math.log10.
 * @internal
 * @module
 */

const LOG10_E = Math.LOG10E;
const LN2 = Math.LN2;

/** log10 of each value, in place. Values must be positive, finite and normal (>= 1.2e-38). */
export function log10InPlace(x: Float32Array): void {
  const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i]!;
    const e = ((b >> 23) & 0xff) - 127;
    const m = 1 + (b & 0x7fffff) * 1.1920928955078125e-7; // 2^-23: exact
    const s = (m - 1) / (m + 1);
    const s2 = s * s;
    const ln = 2 * s * (1 + s2 * (1 / 3 + s2 * (1 / 5 + s2 * (1 / 7 + s2 * (1 / 9 + s2 * (1 / 11 + s2 * (1 / 13)))))));
    x[i] = (e * LN2 + ln) * LOG10_E;
  }
}

/** log10 of positive normal float32 values into a float64 array (for tests). */
export function fastLog10(x: Float32Array): Float64Array {
  const y = Float32Array.from(x);
  const out = new Float64Array(x.length);
  const bits = new Int32Array(y.buffer);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i]!;
    const m = 1 + (b & 0x7fffff) * 1.1920928955078125e-7;
    const s = (m - 1) / (m + 1);
    const s2 = s * s;
    out[i] = ((((b >> 23) & 0xff) - 127) * LN2 + 2 * s * (1 + s2 * (1 / 3 + s2 * (1 / 5 + s2 * (1 / 7 + s2 * (1 / 9 + s2 * (1 / 11 + s2 * (1 / 13)))))))) * LOG10_E;
  }
  return out;
}
