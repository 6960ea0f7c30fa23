/**
 * Whisper's log-mel feature extractor, numerically equivalent to Hugging Face's `WhisperFeatureExtractor`
 * (the torch path): pad/truncate to `n_samples`, centred STFT with reflect padding and a periodic Hann window,
 * power spectrum, drop the last frame, slaney mel filters, `log10`, global `max - 8` floor, `(L + 4) / 4`.
 *
 * Speed: two real frames per complex FFT (PFFFT, WebAssembly SIMD), the mel bank applied in sparse form, a
 * fast `log10`, typed arrays reused across calls (no allocation per frame), and frames that lie entirely in
 * the zero padding skipped. It runs on the CPU only and never touches tfjs, so it can run in worker threads.
 * @module
 */
import path from 'node:path';
import { ConfigValidationError, ModelLoadError, readJsonFile, validateWithSchema, type JSONSchema } from '@multimeditron/core';
import { PairedPowerSpectrum } from './internal/fft.js';
import { log10InPlace } from './internal/fastlog.js';
import { BLOCK_PAIRS, LogMelKernels } from './internal/logmel-kernels.js';
import { melFilterBank, sparseMelFilters, type SparseMelFilters } from './mel.js';

/**
 * The fields of a Hugging Face `preprocessor_config.json` for `WhisperFeatureExtractor` that matter here
 * (snake_case, as in the file). Missing fields take Whisper's defaults; unknown fields are ignored.
 */
export interface WhisperFeatureExtractorConfig {
  /** Number of mel bins (80, or 128 for large-v3). */
  feature_size?: number;
  /** Sampling rate the features are defined at (16000). */
  sampling_rate?: number;
  /** STFT hop in samples (160). */
  hop_length?: number;
  /** Window length in seconds (30). */
  chunk_length?: number;
  /** FFT size (400). */
  n_fft?: number;
  /** Value used to pad short inputs (0.0). */
  padding_value?: number;
  /** `chunk_length * sampling_rate` (480000). */
  n_samples?: number;
  /** `n_samples / hop_length` (3000). */
  nb_max_frames?: number;
  /** Standard deviation of Gaussian noise added before the STFT (0.0 = none, the default). */
  dither?: number;
  /** Legacy: the filter bank stored by older hub repos (n_mels x n_freq or n_freq x n_mels). Not used. */
  mel_filters?: number[][];
  [key: string]: unknown;
}

/** Schema of the fields we read (validated with defaults, other keys kept). */
export const WHISPER_FEATURE_EXTRACTOR_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  properties: {
    feature_size: { type: 'integer', minimum: 1, default: 80 },
    sampling_rate: { type: 'integer', minimum: 1, default: 16000 },
    hop_length: { type: 'integer', minimum: 1, default: 160 },
    chunk_length: { type: 'number', exclusiveMinimum: 0, default: 30 },
    n_fft: { type: 'integer', minimum: 2, multipleOf: 2, default: 400 },
    padding_value: { type: 'number', default: 0 },
    n_samples: { type: 'integer', minimum: 1 },
    nb_max_frames: { type: 'integer', minimum: 1 },
    dither: { type: 'number', minimum: 0, default: 0 },
    mel_filters: { type: 'array', items: { type: 'array', items: { type: 'number' } } },
  },
});

/**
 * `dst[c * rows + r] = (max(src[r * cols + c], low) + 4) / 4`: Whisper's floor and scaling fused with the
 * transpose from frame-major to mel-major, in cache-sized tiles.
 */
function transposeScale(src: Float32Array, rows: number, cols: number, dst: Float32Array, low: number): void {
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let c = c0; c < c1; c++) {
        const d = c * rows;
        for (let r = r0; r < r1; r++) {
          const l = src[r * cols + c]!;
          dst[d + r] = ((l > low ? l : low) + 4) * 0.25;
        }
      }
    }
  }
}

/** Options of {@link WhisperFeatureExtractor.create}. */
export interface WhisperFeatureExtractorOptions {
  /**
   * Use the WebAssembly SIMD kernels for windowing, power spectra, mel bank and log (default true). `false`
   * selects the plain JavaScript loops, which compute the same values in float64 (for comparison and tests).
   */
  simd?: boolean;
}

/** How a recording longer than one window is handled. */
export type LongAudioMode = 'truncate' | 'split';

/** Builds Whisper's `input_features` from 16 kHz mono audio. Create with {@link WhisperFeatureExtractor.create}. */
export class WhisperFeatureExtractor {
  /** Number of mel bins. */
  readonly featureSize: number;
  /** Sampling rate of the input, Hz. */
  readonly samplingRate: number;
  /** STFT hop, samples (160). */
  readonly hopLength: number;
  /** FFT size, samples (400). */
  readonly nFft: number;
  /** Samples per window (30 s). */
  readonly nSamples: number;
  /** Frames per window after dropping the last STFT frame (3000). */
  readonly numFrames: number;
  /** Value short inputs are padded with. */
  readonly paddingValue: number;
  /** Standard deviation of the Gaussian noise added before the STFT (0 = none). */
  readonly dither: number;
  /** The dense filter bank, `(n_fft/2 + 1) x featureSize`, float64 (HF orientation). */
  readonly melFilters: Float64Array;
  /** The validated configuration (with defaults). */
  readonly config: Required<Pick<WhisperFeatureExtractorConfig, 'feature_size' | 'sampling_rate' | 'hop_length' | 'n_fft'>> & WhisperFeatureExtractorConfig;

  private readonly sparse: SparseMelFilters;
  private readonly window: Float64Array;
  private readonly padded: Float32Array;
  private readonly power: Float64Array;
  private readonly melT: Float32Array;
  private readonly kernels: LogMelKernels | undefined;

  private constructor(config: WhisperFeatureExtractor['config'], private readonly fft: PairedPowerSpectrum, kernels: boolean) {
    this.config = config;
    this.featureSize = config.feature_size;
    this.samplingRate = config.sampling_rate;
    this.hopLength = config.hop_length;
    this.nFft = config.n_fft;
    this.nSamples = config.n_samples ?? Math.round((config.chunk_length ?? 30) * this.samplingRate);
    this.paddingValue = config.padding_value ?? 0;
    this.dither = config.dither ?? 0;
    const pad = this.nFft / 2;
    if (this.nSamples <= pad) {
      throw new ConfigValidationError('preprocessor_config.json', [
        { path: '/n_samples', rule: 'minimum', message: `must exceed n_fft / 2 = ${pad} (reflect padding)` },
      ]);
    }
    // centred STFT: 1 + floor(n_samples / hop) frames, the last one dropped
    this.numFrames = Math.floor(this.nSamples / this.hopLength);
    const bins = this.nFft / 2 + 1;
    this.melFilters = melFilterBank({ numFrequencyBins: bins, numMelFilters: this.featureSize, samplingRate: this.samplingRate });
    this.sparse = sparseMelFilters(this.melFilters, bins, this.featureSize);
    this.window = new Float64Array(this.nFft);
    for (let n = 0; n < this.nFft; n++) this.window[n] = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / this.nFft);
    this.power = new Float64Array(2 * bins);
    // the WebAssembly SIMD kernels when PFFFT runs the FFT and n_fft is a multiple of 4; plain loops otherwise
    if (kernels && fft.engine !== 'dft' && this.nFft % 4 === 0) {
      this.kernels = new LogMelKernels({
        signalLength: this.nSamples + this.nFft, nFft: this.nFft, hop: this.hopLength, frames: this.numFrames,
        sparse: this.sparse, window: this.window, perm: fft.permutation,
      });
      this.padded = this.kernels.signal;
      this.melT = this.kernels.melT;
    } else {
      this.padded = new Float32Array(this.nSamples + this.nFft);
      this.melT = new Float32Array(this.featureSize * this.numFrames);
    }
  }

  /**
   * Validates a `preprocessor_config.json` object (defaults applied) and builds the extractor.
   * Throws {@link ConfigValidationError} naming the offending field.
   */
  static async create(
    config: WhisperFeatureExtractorConfig = {},
    name = 'preprocessor_config.json',
    options: WhisperFeatureExtractorOptions = {},
  ): Promise<WhisperFeatureExtractor> {
    const data = validateWithSchema<WhisperFeatureExtractor['config']>(
      WHISPER_FEATURE_EXTRACTOR_SCHEMA, structuredClone(config), name,
    );
    const fft = await PairedPowerSpectrum.create(data.n_fft);
    return new WhisperFeatureExtractor(data, fft, options.simd ?? true);
  }

  /** Which code computes the features: the WebAssembly SIMD kernels or the JavaScript loops. */
  get implementation(): 'wasm-simd' | 'js' {
    return this.kernels ? 'wasm-simd' : 'js';
  }

  /**
   * Reads `preprocessor_config.json` from a local model folder and builds the extractor. A missing or
   * unreadable file is a {@link ModelLoadError}; invalid fields a {@link ConfigValidationError}.
   */
  static async fromPretrained(dir: string, options: WhisperFeatureExtractorOptions = {}): Promise<WhisperFeatureExtractor> {
    const file = path.join(dir, 'preprocessor_config.json');
    const json = (await readJsonFile(file)) as WhisperFeatureExtractorConfig;
    return WhisperFeatureExtractor.create(json, file, options);
  }

  /** Shape of one window's features: `[featureSize, numFrames]`. */
  get shape(): [number, number] {
    return [this.featureSize, this.numFrames];
  }

  /**
   * Largest absolute difference between a legacy `mel_filters` list (either orientation) and the filter bank
   * built here; `undefined` when the config has none or its shape does not fit.
   */
  compareLegacyMelFilters(): number | undefined {
    const m = this.config.mel_filters;
    if (!Array.isArray(m) || m.length === 0) return undefined;
    const bins = this.nFft / 2 + 1;
    const nm = this.featureSize;
    const melMajor = m.length === nm && m[0]?.length === bins;
    const freqMajor = m.length === bins && m[0]?.length === nm;
    if (!melMajor && !freqMajor) return undefined;
    let max = 0;
    for (let k = 0; k < bins; k++) {
      for (let j = 0; j < nm; j++) {
        const v = melMajor ? m[j]![k]! : m[k]![j]!;
        max = Math.max(max, Math.abs(v - this.melFilters[k * nm + j]!));
      }
    }
    return max;
  }

  /**
   * Splits a recording into windows of `nSamples` (views, no copies). `truncate` keeps only the first
   * window; `split` returns every consecutive window, the last one shorter (it is padded at extraction).
   */
  windows(samples: Float32Array, mode: LongAudioMode = 'truncate'): Float32Array[] {
    if (mode === 'truncate' || samples.length <= this.nSamples) return [samples.subarray(0, this.nSamples)];
    const out: Float32Array[] = [];
    for (let s = 0; s < samples.length; s += this.nSamples) out.push(samples.subarray(s, s + this.nSamples));
    return out;
  }

  /**
   * `input_features` of one window: `samples` (mono, at {@link samplingRate}) is zero-padded (padding_value)
   * or truncated to `nSamples`. Returns `featureSize x numFrames` values, row-major (mel bin major), in
   * `out` if given. Throws a RangeError if the spectrum overflows float32 (absurdly loud input).
   */
  extract(samples: Float32Array, out: Float32Array = new Float32Array(this.featureSize * this.numFrames)): Float32Array {
    const T = this.numFrames;
    const nm = this.featureSize;
    if (out.length !== nm * T) throw new RangeError(`output buffer has ${out.length} values, expected ${nm * T}`);
    const N = this.nSamples;
    const nFft = this.nFft;
    const pad = nFft / 2;
    const hop = this.hopLength;
    const P = this.padded;
    const len = Math.min(samples.length, N);

    // 1. the signal, padded to N, at P[pad .. pad + N)
    P.set(samples.subarray(0, len), pad);
    P.fill(this.paddingValue, pad + len, pad + N);
    if (this.dither > 0) {
      for (let i = pad; i < pad + N; i += 2) {
        // Box-Muller: two standard normals per pair of uniforms
        const u1 = 1 - Math.random();
        const r = Math.sqrt(-2 * Math.log(u1));
        const th = 2 * Math.PI * Math.random();
        P[i] = P[i]! + this.dither * r * Math.cos(th);
        if (i + 1 < pad + N) P[i + 1] = P[i + 1]! + this.dither * r * Math.sin(th);
      }
    }
    // 2. reflect padding (numpy "reflect": the edge sample is not repeated)
    for (let j = 0; j < pad; j++) {
      P[j] = P[2 * pad - j]!;
      P[pad + N + j] = P[pad + N - 2 - j]!;
    }
    let lastNonZero = P.length - 1;
    while (lastNonZero >= 0 && P[lastNonZero] === 0) lastNonZero--;

    // 3.-4. power spectra two frames at a time, sparse mel bank, written frame-major into `melT` (contiguous
    // writes), transposed to mel-major at the end
    const firstZero = Math.min(T, Math.floor(lastNonZero / hop) + 1);
    const melT = this.melT;
    let max = 1e-10;
    if (this.kernels) {
      const K = this.kernels;
      const pairs = Math.ceil(firstZero / 2);
      for (let c = 0; c < pairs; c += BLOCK_PAIRS) {
        const count = Math.min(BLOCK_PAIRS, pairs - c);
        K.windowPairs(2 * c, count);
        this.fft.transformBlock(K.block, count);
        max = Math.max(max, K.powerMel(2 * c, count));
      }
    } else {
      max = this.powerMelJs(P, firstZero);
    }
    if (!(max < 3.4e38)) throw new RangeError('the power spectrum overflows float32 (input far louder than full scale)');
    // 5. log10; frames starting after the last non-zero sample have an all-zero spectrum: log10(1e-10) = -10
    const computed = Math.min(firstZero + (firstZero & 1), T) * nm;
    if (this.kernels) {
      const simd = computed - (computed % 4);
      this.kernels.log10(simd);
      log10InPlace(melT.subarray(simd, computed));
    } else {
      log10InPlace(melT.subarray(0, computed));
    }
    melT.fill(-10, computed, T * nm);
    // the floor max(L) - 8 is global over the window, then (L + 4) / 4
    const maxL = Math.log10(Math.fround(max));
    if (this.kernels) {
      this.kernels.transposeScale(maxL - 8);
      out.set(this.kernels.features);
    } else {
      transposeScale(melT, T, nm, out, maxL - 8);
    }
    return out;
  }

  /** Steps 3-4 in plain JavaScript (float64): frames [0, firstZero) rounded up to pairs. Returns the max. */
  private powerMelJs(P: Float32Array, firstZero: number): number {
    const T = this.numFrames;
    const nm = this.featureSize;
    const hop = this.hopLength;
    const pw = this.power;
    const bins = this.nFft / 2 + 1;
    const melT = this.melT;
    const { firstBin, offsets, weights } = this.sparse;
    let max = 1e-10;
    for (let t = 0; t < firstZero; t += 2) {
      const two = t + 1 < T;
      const offA = t * hop;
      this.fft.power2(P, offA, two ? offA + hop : -1, this.window, pw, 0, pw, bins);
      const rowA = t * nm;
      const rowB = rowA + nm;
      for (let j = 0; j < nm; j++) {
        const o0 = offsets[j]!;
        const o1 = offsets[j + 1]!;
        const k0 = firstBin[j]! - o0;
        let sa = 0;
        let sb = 0;
        for (let q = o0; q < o1; q++) {
          const w = weights[q]!;
          sa += w * pw[k0 + q]!;
          sb += w * pw[bins + k0 + q]!;
        }
        // the 1e-10 clamp, before the logarithm
        sa = sa > 1e-10 ? sa : 1e-10;
        sb = sb > 1e-10 ? sb : 1e-10;
        if (sa > max) max = sa;
        melT[rowA + j] = sa;
        if (two) {
          if (sb > max) max = sb;
          melT[rowB + j] = sb;
        }
      }
    }
    return max;
  }

  /** Frees the FFT's WebAssembly buffers. */
  dispose(): void {
    this.fft.dispose();
  }
}
