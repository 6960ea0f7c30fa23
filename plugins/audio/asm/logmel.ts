// AssemblyScript source of the SIMD kernels of the Whisper log-mel extractor. Compiled by
// scripts/build-wasm.mjs (npm run build:wasm) into src/internal/logmel-wasm.ts (base64). The JavaScript side
// (src/internal/logmel-kernels.ts) lays out the buffers in this module's memory and runs the FFTs (PFFFT, in its
// own module) between windowPairs and powerMel. All pointers are byte offsets into this module's memory.

/**
 * For `count` pairs of frames starting at frame `t0` (pair p = frames t0 + 2p and t0 + 2p + 1, `hop` samples
 * apart), writes `w[j] * x[t * hop + j]` of both frames interleaved as complex values (re = first frame,
 * im = second) to `dst`, 2 * nFft floats per pair. `nFft` must be a multiple of 4.
 */
export function windowPairs(signal: usize, win: usize, nFft: i32, hop: i32, t0: i32, count: i32, dst: usize): void {
  const hopBytes = <usize>hop << 2;
  const pairBytes = <usize>nFft << 3;
  for (let p = 0; p < count; p++) {
    const a = signal + (<usize>((t0 + 2 * p) * hop) << 2);
    const b = a + hopBytes;
    const d = dst + <usize>p * pairBytes;
    for (let j = 0; j < nFft; j += 4) {
      const off = <usize>j << 2;
      const w = v128.load(win + off);
      const x = f32x4.mul(v128.load(a + off), w);
      const y = f32x4.mul(v128.load(b + off), w);
      v128.store(d + (off << 1), v128.shuffle<f32>(x, y, 0, 4, 1, 5));
      v128.store(d + (off << 1) + 16, v128.shuffle<f32>(x, y, 2, 6, 3, 7));
    }
  }
}

/**
 * For `count` pairs of complex spectra Z = FFT(a + i b) at `spectra` (2 * n floats each, PFFFT's unordered
 * layout; `perm` gives, per bin k, the byte offsets of Re Z[k], Im Z[k], Re Z[n-k], Im Z[n-k]), computes the
 * power spectra |A|^2 and |B|^2 (A = (Z[k] + conj Z[n-k]) / 2, B = (Z[k] - conj Z[n-k]) / 2i) as f64x2 lanes
 * (A, B), applies the sparse mel bank (filter j: f64 `weights[offsets[j]..offsets[j+1])` on bins from
 * `firstBin[j]`) to both frames at once, clamps at 1e-10 and writes frame-major rows of `nm` floats for frames
 * t0 + 2p (and t0 + 2p + 1 when < `frames`) to `melT`. Arithmetic in f64, storage in f32. Returns the largest
 * value written.
 */
export function powerMel(
  spectra: usize, perm: usize, n: i32, bins: i32, count: i32,
  firstBin: usize, offsets: usize, weights: usize, nm: i32,
  pw: usize, melT: usize, t0: i32, frames: i32,
): f64 {
  let mx = f64x2.splat(1e-10);
  const floor = f64x2.splat(1e-10);
  const half = f64x2.splat(0.5);
  const pairBytes = <usize>n << 3;
  for (let p = 0; p < count; p++) {
    const z = spectra + <usize>p * pairBytes;
    for (let k = 0; k < bins; k++) {
      const q = perm + (<usize>k << 4);
      // Z = (zr, zi), Y = (yr, yi); S = (Z + Y) / 2 = (ar, br); D = (Z - Y) / 2 = (bi, ai)
      const zv = f64x2.replace_lane(f64x2.splat(<f64>load<f32>(z + <usize>load<i32>(q))), 1, <f64>load<f32>(z + <usize>load<i32>(q, 4)));
      const yv = f64x2.replace_lane(f64x2.splat(<f64>load<f32>(z + <usize>load<i32>(q, 8))), 1, <f64>load<f32>(z + <usize>load<i32>(q, 12)));
      const sv = f64x2.mul(f64x2.add(zv, yv), half);
      const dv = f64x2.mul(f64x2.sub(zv, yv), half);
      const d2 = f64x2.mul(dv, dv);
      // (|A|^2, |B|^2) = S^2 + swap(D^2)
      v128.store(pw + (<usize>k << 4), f64x2.add(f64x2.mul(sv, sv), v128.shuffle<f64>(d2, d2, 1, 0)));
    }
    const tA = t0 + 2 * p;
    const rowA = melT + (<usize>(tA * nm) << 2);
    const rowB = rowA + (<usize>nm << 2);
    const hasB = tA + 1 < frames;
    for (let j = 0; j < nm; j++) {
      const o0 = load<i32>(offsets + (<usize>j << 2));
      const o1 = load<i32>(offsets + (<usize>(j + 1) << 2));
      let at = pw + (<usize>load<i32>(firstBin + (<usize>j << 2)) << 4);
      let acc = f64x2.splat(0);
      for (let q = o0; q < o1; q++) {
        acc = f64x2.add(acc, f64x2.mul(v128.load64_splat(weights + (<usize>q << 3)), v128.load(at)));
        at += 16;
      }
      acc = f64x2.max(acc, floor);
      store<f32>(rowA + (<usize>j << 2), <f32>f64x2.extract_lane(acc, 0));
      if (hasB) {
        store<f32>(rowB + (<usize>j << 2), <f32>f64x2.extract_lane(acc, 1));
        mx = f64x2.max(mx, acc);
      } else {
        mx = f64x2.max(mx, f64x2.splat(f64x2.extract_lane(acc, 0)));
      }
    }
  }
  return max(f64x2.extract_lane(mx, 0), f64x2.extract_lane(mx, 1));
}

@inline function scale(v: v128, low: v128): v128 {
  return f32x4.mul(f32x4.add(f32x4.max(v, low), f32x4.splat(4)), f32x4.splat(0.25));
}

/**
 * `dst[c * rows + r] = (max(src[r * cols + c], low) + 4) / 4`: Whisper's floor and scaling fused with the
 * transpose of the frame-major matrix `src` (rows x cols) to mel-major, 4 x 4 blocks at a time through
 * shuffles; rows and columns beyond a multiple of 4 element by element.
 */
export function transposeScale(src: usize, rows: i32, cols: i32, dst: usize, low: f32): void {
  const lowv = f32x4.splat(low);
  const rows4 = rows & ~3;
  const cols4 = cols & ~3;
  const rowBytes = <usize>cols << 2;
  for (let c = 0; c < cols4; c += 4) {
    const d0 = dst + (<usize>(c * rows) << 2);
    const d1 = d0 + (<usize>rows << 2);
    const d2 = d1 + (<usize>rows << 2);
    const d3 = d2 + (<usize>rows << 2);
    for (let r = 0; r < rows4; r += 4) {
      const s = src + (<usize>(r * cols + c) << 2);
      const a0 = v128.load(s);
      const a1 = v128.load(s + rowBytes);
      const a2 = v128.load(s + 2 * rowBytes);
      const a3 = v128.load(s + 3 * rowBytes);
      const t0 = v128.shuffle<f32>(a0, a1, 0, 4, 1, 5);
      const t1 = v128.shuffle<f32>(a0, a1, 2, 6, 3, 7);
      const t2 = v128.shuffle<f32>(a2, a3, 0, 4, 1, 5);
      const t3 = v128.shuffle<f32>(a2, a3, 2, 6, 3, 7);
      const o = <usize>r << 2;
      v128.store(d0 + o, scale(v128.shuffle<f32>(t0, t2, 0, 1, 4, 5), lowv));
      v128.store(d1 + o, scale(v128.shuffle<f32>(t0, t2, 2, 3, 6, 7), lowv));
      v128.store(d2 + o, scale(v128.shuffle<f32>(t1, t3, 0, 1, 4, 5), lowv));
      v128.store(d3 + o, scale(v128.shuffle<f32>(t1, t3, 2, 3, 6, 7), lowv));
    }
  }
  // the edges: rows past rows4 for every column, columns past cols4 for every row
  for (let c = 0; c < cols; c++) {
    const rStart = c < cols4 ? rows4 : 0;
    for (let r = rStart; r < rows; r++) {
      const l = load<f32>(src + (<usize>(r * cols + c) << 2));
      store<f32>(dst + (<usize>(c * rows + r) << 2), (max(l, low) + 4) * 0.25);
    }
  }
}

/**
 * log10 in place of `n` (a multiple of 4) positive normal f32 values: x = 2^e m, m in [1, 2) from the bits,
 * ln m = 2 atanh(s), s = (m - 1) / (m + 1) in [0, 1/3), seven terms of the odd series (truncation < 1e-7),
 * four values at a time.
 */
export function log10InPlace(x: usize, n: i32): void {
  const mant = i32x4.splat(0x7fffff);
  const oneBits = i32x4.splat(0x3f800000);
  const bias = i32x4.splat(127);
  const one = f32x4.splat(1);
  const ln2 = f32x4.splat(<f32>0.6931471805599453);
  const log10e = f32x4.splat(<f32>0.4342944819032518);
  const c3 = f32x4.splat(<f32>(1.0 / 3));
  const c5 = f32x4.splat(<f32>(1.0 / 5));
  const c7 = f32x4.splat(<f32>(1.0 / 7));
  const c9 = f32x4.splat(<f32>(1.0 / 9));
  const c11 = f32x4.splat(<f32>(1.0 / 11));
  const c13 = f32x4.splat(<f32>(1.0 / 13));
  const two = f32x4.splat(2);
  for (let i = 0; i < n; i += 4) {
    const p = x + (<usize>i << 2);
    const v = v128.load(p);
    const e = f32x4.convert_i32x4_s(i32x4.sub(i32x4.shr_u(v, 23), bias));
    const m = v128.or(v128.and(v, mant), oneBits);
    const s = f32x4.div(f32x4.sub(m, one), f32x4.add(m, one));
    const s2 = f32x4.mul(s, s);
    let poly = f32x4.add(c11, f32x4.mul(s2, c13));
    poly = f32x4.add(c9, f32x4.mul(s2, poly));
    poly = f32x4.add(c7, f32x4.mul(s2, poly));
    poly = f32x4.add(c5, f32x4.mul(s2, poly));
    poly = f32x4.add(c3, f32x4.mul(s2, poly));
    poly = f32x4.add(one, f32x4.mul(s2, poly));
    const ln = f32x4.add(f32x4.mul(e, ln2), f32x4.mul(f32x4.mul(two, s), poly));
    v128.store(p, f32x4.mul(ln, log10e));
  }
}
