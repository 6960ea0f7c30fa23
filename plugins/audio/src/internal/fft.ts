/**
 * Power spectra of real frames, two frames per complex FFT.
 *
 * The FFT itself is PFFFT (Julien Pommier's "pretty fast FFT", mixed radix 2/3/4/5, WebAssembly SIMD build from
 * `@echogarden/pffft-wasm`). Whisper's n_fft = 400 = 2^4 * 5^2 is not a power of two, which rules out radix-2
 * libraries such as fft.js; PFFFT's complex transform accepts it (its SIMD real transform needs N % 32 == 0,
 * which 400 is not, hence the packing of two real frames a, b into one complex signal a + i b):
 *
 *   Z = FFT(a + i b),  A[k] = (Z[k] + conj Z[N-k]) / 2,  B[k] = (Z[k] - conj Z[N-k]) / 2i.
 *
 * Sizes PFFFT cannot do (a prime factor other than 2, 3, 5) fall back to a direct real DFT in JavaScript
 * (O(N^2), correct but slow; Whisper never needs it).
 * @internal
 * @module
 */
import type { PffftModule } from './pffft-types.js';

type Factory = (options?: Record<string, unknown>) => Promise<PffftModule>;

let simdModule: Promise<PffftModule> | undefined;
let scalarModule: Promise<PffftModule> | undefined;

/** The package ships no types: the specifiers are held in variables so that the imports are typed by us. */
const SIMD_ENTRY: string = '@echogarden/pffft-wasm/simd';
const SCALAR_ENTRY: string = '@echogarden/pffft-wasm';

async function loadModule(simd: boolean): Promise<PffftModule> {
  const load = (spec: string) => import(spec).then((m: { default: Factory }) => m.default());
  if (simd) return (simdModule ??= load(SIMD_ENTRY));
  return (scalarModule ??= load(SCALAR_ENTRY));
}

/** True when `n` has no prime factor other than 2, 3 and 5. */
function smooth235(n: number): boolean {
  for (const p of [2, 3, 5]) while (n % p === 0) n /= p;
  return n === 1;
}

const PFFFT_COMPLEX = 1;
const PFFFT_FORWARD = 0;

/** What a transform holds in PFFFT's memory (shared with the finalizer, so it must not reference the object). */
interface Held {
  mod: PffftModule;
  setup: number;
  ptrs: number[];
}

function release(h: Held): void {
  for (const p of h.ptrs) h.mod._pffft_aligned_free(p);
  h.ptrs.length = 0;
  if (h.setup) h.mod._pffft_destroy_setup(h.setup);
  h.setup = 0;
}

/** Frees the PFFFT buffers of transforms that were collected without dispose(). */
const finalizer = new FinalizationRegistry<Held>(release);

/**
 * Computes |FFT(w * frame)|^2 for the first n/2 + 1 bins of real frames of length n, two frames per call.
 * Create with {@link PairedPowerSpectrum.create}; reuse for any number of frames; {@link dispose} frees the
 * WebAssembly buffers.
 */
export class PairedPowerSpectrum {
  /** Number of output bins, n / 2 + 1. */
  readonly bins: number;
  private heap: Float32Array;
  /**
   * Positions in PFFFT's internal (unordered) output of Re Z[k], Im Z[k], Re Z[N-k], Im Z[N-k] for each bin k,
   * so that the transform can skip its reordering pass.
   */
  private readonly perm: Int32Array;
  private readonly dft: { cos: Float64Array; sin: Float64Array } | undefined;
  private held: Held | undefined;

  private constructor(
    readonly n: number,
    private readonly mod: PffftModule | undefined,
    private setup: number,
    private readonly inPtr: number,
    private readonly outPtr: number,
    private readonly workPtr: number,
  ) {
    this.bins = (n >> 1) + 1;
    this.heap = mod ? mod.HEAPF32 : new Float32Array(0);
    if (mod) {
      this.held = { mod, setup, ptrs: [inPtr, outPtr, workPtr] };
      finalizer.register(this, this.held, this);
    }
    this.perm = new Int32Array(4 * this.bins);
    if (mod) {
      // run the reordering on an array of indices: position k of the ordered output names its internal slot
      const heap = mod.HEAPF32;
      for (let i = 0; i < 2 * n; i++) heap[(inPtr >> 2) + i] = i;
      mod._pffft_zreorder(setup, inPtr, outPtr, PFFFT_FORWARD);
      const ordered = mod.HEAPF32.slice(outPtr >> 2, (outPtr >> 2) + 2 * n);
      for (let k = 0; k < this.bins; k++) {
        const nk = (n - k) % n;
        this.perm[4 * k] = ordered[2 * k]!;
        this.perm[4 * k + 1] = ordered[2 * k + 1]!;
        this.perm[4 * k + 2] = ordered[2 * nk]!;
        this.perm[4 * k + 3] = ordered[2 * nk + 1]!;
      }
    }
    if (!mod) {
      const cos = new Float64Array(n * this.bins);
      const sin = new Float64Array(n * this.bins);
      for (let k = 0; k < this.bins; k++) {
        for (let j = 0; j < n; j++) {
          const a = (2 * Math.PI * ((j * k) % n)) / n;
          cos[k * n + j] = Math.cos(a);
          sin[k * n + j] = Math.sin(a);
        }
      }
      this.dft = { cos, sin };
    }
  }

  /** Builds the transform for frames of length `n` (even). */
  static async create(n: number): Promise<PairedPowerSpectrum> {
    if (!Number.isInteger(n) || n < 2 || n % 2 !== 0) throw new RangeError(`FFT size must be an even integer >= 2, got ${n}`);
    if (smooth235(n)) {
      const mod = await loadModule(n % 16 === 0);
      const setup = mod._pffft_new_setup(n, PFFFT_COMPLEX);
      if (setup) {
        const bytes = 2 * n * 4;
        return new PairedPowerSpectrum(n, mod, setup, mod._pffft_aligned_malloc(bytes), mod._pffft_aligned_malloc(bytes), mod._pffft_aligned_malloc(bytes));
      }
    }
    return new PairedPowerSpectrum(n, undefined, 0, 0, 0, 0);
  }

  /** Which engine runs the transform (for diagnostics). */
  get engine(): 'pffft-simd' | 'pffft' | 'dft' {
    if (!this.mod) return 'dft';
    return this.n % 16 === 0 ? 'pffft-simd' : 'pffft';
  }

  /**
   * Power spectra of two frames: `src[offA + j] * win[j]` and `src[offB + j] * win[j]` (j < n). Writes
   * `bins` values to `outA[outAOff..]` and `outB[outBOff..]`. Pass `offB < 0` for a single frame (B is then
   * zero and `outB` untouched).
   */
  power2(
    src: Float32Array, offA: number, offB: number, win: Float64Array,
    outA: Float64Array, outAOff: number, outB: Float64Array, outBOff: number,
  ): void {
    const n = this.n;
    const bins = this.bins;
    if (!this.mod) {
      this.dftPower(src, offA, win, outA, outAOff);
      if (offB >= 0) this.dftPower(src, offB, win, outB, outBOff);
      return;
    }
    let heap = this.heap;
    if (heap.buffer !== this.mod.HEAPF32.buffer) heap = this.heap = this.mod.HEAPF32;
    let p = this.inPtr >> 2;
    if (offB >= 0) {
      for (let j = 0; j < n; j++, p += 2) {
        const w = win[j]!;
        heap[p] = src[offA + j]! * w;
        heap[p + 1] = src[offB + j]! * w;
      }
    } else {
      for (let j = 0; j < n; j++, p += 2) {
        heap[p] = src[offA + j]! * win[j]!;
        heap[p + 1] = 0;
      }
    }
    this.mod._pffft_transform(this.setup, this.inPtr, this.outPtr, this.workPtr, PFFFT_FORWARD);
    const o = this.outPtr >> 2;
    const perm = this.perm;
    for (let k = 0; k < bins; k++) {
      const zr = heap[o + perm[4 * k]!]!;
      const zi = heap[o + perm[4 * k + 1]!]!;
      const yr = heap[o + perm[4 * k + 2]!]!;
      const yi = heap[o + perm[4 * k + 3]!]!;
      // A = (Z[k] + conj Z[N-k]) / 2, B = (Z[k] - conj Z[N-k]) / 2i; k = 0 pairs with itself
      const ar = 0.5 * (zr + yr);
      const ai = 0.5 * (zi - yi);
      outA[outAOff + k] = ar * ar + ai * ai;
      if (offB >= 0) {
        const br = 0.5 * (zi + yi);
        const bi = 0.5 * (zr - yr);
        outB[outBOff + k] = br * br + bi * bi;
      }
    }
  }

  /** Per bin k: float indices of Re Z[k], Im Z[k], Re Z[n-k], Im Z[n-k] in the unordered output (PFFFT only). */
  get permutation(): Int32Array {
    return this.perm;
  }

  private blockIn = 0;
  private blockOut = 0;
  private blockPairs = 0;

  /**
   * Transforms `count` interleaved complex inputs of 2n floats each, in place in `block` (PFFFT's unordered
   * output layout). The block goes through PFFFT's own memory in one copy each way.
   */
  transformBlock(block: Float32Array, count: number): void {
    const mod = this.mod;
    if (!mod) throw new Error('transformBlock needs the PFFFT engine');
    const floats = 2 * this.n;
    if (count > this.blockPairs) {
      const held = this.held!;
      if (this.blockPairs) {
        mod._pffft_aligned_free(this.blockIn);
        mod._pffft_aligned_free(this.blockOut);
        held.ptrs = held.ptrs.filter((p) => p !== this.blockIn && p !== this.blockOut);
      }
      this.blockIn = mod._pffft_aligned_malloc(4 * floats * count);
      this.blockOut = mod._pffft_aligned_malloc(4 * floats * count);
      held.ptrs.push(this.blockIn, this.blockOut);
      this.blockPairs = count;
    }
    mod.HEAPF32.set(block.subarray(0, floats * count), this.blockIn >> 2);
    const bytes = 4 * floats;
    for (let i = 0; i < count; i++) {
      mod._pffft_transform(this.setup, this.blockIn + i * bytes, this.blockOut + i * bytes, this.workPtr, PFFFT_FORWARD);
    }
    block.set(mod.HEAPF32.subarray(this.blockOut >> 2, (this.blockOut >> 2) + floats * count));
  }

  private dftPower(src: Float32Array, off: number, win: Float64Array, out: Float64Array, outOff: number): void {
    const { cos, sin } = this.dft!;
    const n = this.n;
    for (let k = 0; k < this.bins; k++) {
      let re = 0;
      let im = 0;
      const row = k * n;
      for (let j = 0; j < n; j++) {
        const x = src[off + j]! * win[j]!;
        re += x * cos[row + j]!;
        im -= x * sin[row + j]!;
      }
      out[outOff + k] = re * re + im * im;
    }
  }

  /** Frees the WebAssembly buffers (also done when the object is garbage-collected). Do not use it afterwards. */
  dispose(): void {
    if (!this.held) return;
    finalizer.unregister(this);
    release(this.held);
    this.held = undefined;
    this.setup = 0;
    this.blockPairs = 0;
  }
}
