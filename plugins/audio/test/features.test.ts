import { promises as fs } from 'node:fs';
import { ConfigValidationError } from '@multimeditron/core';
import { decodeAudio, melFilterBank, resample, WhisperFeatureExtractor } from '@multimeditron/plugin-audio';
import { PairedPowerSpectrum } from '../src/internal/fft.js';
import { fastLog10 } from '../src/internal/fastlog.js';
import { CASES, diff, expectedData, golden, TOL, WHISPER_DIR } from './helpers.js';

let fe: WhisperFeatureExtractor;
const measured: Record<string, number> = {};

beforeAll(async () => {
  fe = await WhisperFeatureExtractor.fromPretrained(WHISPER_DIR);
});

afterAll(() => {
  fe.dispose();
  // the parity numbers, for the report
  process.stdout.write(`plugin-audio log-mel parity (max abs): ${JSON.stringify(measured)}\n`);
});

/**
 * An independent float64 reference of the HF formula with a naive DFT: slow (O(n_fft^2) per frame), so only
 * for short windows.
 */
function referenceLogMel(x: Float32Array, o: { nMels: number; nSamples: number; nFft?: number; hop?: number; sr?: number }): Float64Array {
  const nFft = o.nFft ?? 400;
  const hop = o.hop ?? 160;
  const N = o.nSamples;
  const pad = nFft / 2;
  const s = new Float64Array(N);
  s.set(x.subarray(0, Math.min(N, x.length)));
  const P = new Float64Array(N + nFft);
  P.set(s, pad);
  for (let j = 0; j < pad; j++) {
    P[pad - 1 - j] = s[j + 1]!;
    P[pad + N + j] = s[N - 2 - j]!;
  }
  const frames = Math.floor(N / hop);
  const bins = nFft / 2 + 1;
  const M = melFilterBank({ numFrequencyBins: bins, numMelFilters: o.nMels, samplingRate: o.sr ?? 16000 });
  const out = new Float64Array(o.nMels * frames);
  const pw = new Float64Array(bins);
  const cos = new Float64Array(nFft);
  const sin = new Float64Array(nFft);
  for (let n = 0; n < nFft; n++) {
    cos[n] = Math.cos((2 * Math.PI * n) / nFft);
    sin[n] = Math.sin((2 * Math.PI * n) / nFft);
  }
  const v = new Float64Array(nFft);
  for (let t = 0; t < frames; t++) {
    for (let n = 0; n < nFft; n++) v[n] = P[t * hop + n]! * (0.5 - 0.5 * cos[n]!);
    for (let k = 0; k < bins; k++) {
      let re = 0;
      let im = 0;
      for (let n = 0; n < nFft; n++) {
        const r = (k * n) % nFft;
        re += v[n]! * cos[r]!;
        im -= v[n]! * sin[r]!;
      }
      pw[k] = re * re + im * im;
    }
    for (let j = 0; j < o.nMels; j++) {
      let acc = 0;
      for (let k = 0; k < bins; k++) acc += M[k * o.nMels + j]! * pw[k]!;
      out[j * frames + t] = Math.log10(Math.max(acc, 1e-10));
    }
  }
  let max = -Infinity;
  for (const v of out) max = Math.max(max, v);
  for (let i = 0; i < out.length; i++) out[i] = (Math.max(out[i]!, max - 8) + 4) / 4;
  return out;
}

describe('mel filter bank', () => {
  test('equals the stored mel_filters (201 x 80, HF orientation)', async () => {
    const stored = await expectedData('mel_filters');
    expect(fe.melFilters.length).toBe(201 * 80);
    const d = diff(fe.melFilters, stored).max;
    measured['mel_filters'] = d;
    expect(d).toBeLessThan(1e-8);
  });

  test('a legacy mel_filters list in preprocessor_config.json is cross-checked in either orientation', async () => {
    const stored = await expectedData('mel_filters');
    const freqMajor = Array.from({ length: 201 }, (_, k) => Array.from(stored.subarray(k * 80, k * 80 + 80)));
    const melMajor = Array.from({ length: 80 }, (_, j) => freqMajor.map((row) => row[j]!));
    for (const m of [freqMajor, melMajor]) {
      const f = await WhisperFeatureExtractor.create({ mel_filters: m });
      expect(f.compareLegacyMelFilters()).toBeLessThan(1e-8);
      f.dispose();
    }
    melMajor[3]![10] = 1;
    const bad = await WhisperFeatureExtractor.create({ mel_filters: melMajor });
    expect(bad.compareLegacyMelFilters()).toBeGreaterThan(0.9);
    bad.dispose();
  });
});

describe('input_features equal Hugging Face WhisperFeatureExtractor', () => {
  test.each(CASES.filter((c) => !c.needs_resample_or_downmix).map((c) => [c.name, c] as const))(
    '%s (16 kHz) within atol 5e-4',
    async (name, c) => {
      const raw = await decodeAudio(await fs.readFile(golden(c.audio)), c.audio);
      expect(raw.sampleRate).toBe(16000);
      const feats = fe.extract(raw.samples);
      expect(fe.shape).toEqual([80, 3000]);
      const d = diff(feats, await expectedData(c.keys['input_features']!));
      measured[name] = d.max;
      expect(d.max).toBeLessThanOrEqual(TOL.input_features.atol);
    },
  );

  test('stereo_44k1 from the stored waveform_16k within atol 5e-4', async () => {
    const d = diff(fe.extract(await expectedData('stereo_44k1.waveform_16k')), await expectedData('stereo_44k1.input_features'));
    measured['stereo_44k1 (stored waveform_16k)'] = d.max;
    expect(d.max).toBeLessThanOrEqual(TOL.input_features.atol);
  });

  test('stereo_44k1 end to end (downmix + our sinc resampler) within atol 2e-3', async () => {
    const raw = await decodeAudio(await fs.readFile(golden('audio', 'stereo_44k1.wav')), 'stereo_44k1.wav');
    expect(raw).toMatchObject({ sampleRate: 44100, channels: 2 });
    const d = diff(fe.extract(resample(raw.samples, 44100, 16000)), await expectedData('stereo_44k1.input_features'));
    measured['stereo_44k1 (end to end)'] = d.max;
    expect(d.max).toBeLessThanOrEqual(TOL.resampled_input_features_torchaudio_sinc_reimplementation.atol);
  });

  test('long_35s is truncated to the first 30 s; split mode gives the tail as a second padded window', async () => {
    const raw = await decodeAudio(await fs.readFile(golden('audio', 'long_35s.wav')), 'long_35s.wav');
    expect(fe.windows(raw.samples, 'truncate')).toHaveLength(1);
    expect(fe.windows(raw.samples, 'truncate')[0]!.length).toBe(480000);
    const w = fe.windows(raw.samples, 'split');
    expect(w.map((x) => x.length)).toEqual([480000, 80000]);
    const tail = fe.extract(w[1]!);
    const padded = new Float32Array(480000);
    padded.set(raw.samples.subarray(480000));
    expect(diff(tail, fe.extract(padded)).max).toBe(0);
  });

  test('matches an independent naive-DFT float64 reference with 128 mel bins (large-v3 style), 1 s window', async () => {
    const f128 = await WhisperFeatureExtractor.create({ feature_size: 128, chunk_length: 1 });
    expect(f128.shape).toEqual([128, 100]);
    const raw = await decodeAudio(await fs.readFile(golden('audio', 'speech_2s.wav')), 'speech_2s.wav');
    const x = raw.samples.subarray(8000, 20000); // 0.75 s: padding included
    const d = diff(f128.extract(x), referenceLogMel(x, { nMels: 128, nSamples: 16000 }));
    expect(d.max).toBeLessThan(1e-4);
    f128.dispose();
  });

  test('the WebAssembly SIMD kernels and the plain JavaScript loops agree', async () => {
    expect(fe.implementation).toBe('wasm-simd');
    const js = await WhisperFeatureExtractor.fromPretrained(WHISPER_DIR, { simd: false });
    expect(js.implementation).toBe('js');
    const odd = await WhisperFeatureExtractor.create({ n_fft: 402, hop_length: 161 }); // n_fft % 4 != 0
    expect(odd.implementation).toBe('js');
    odd.dispose();
    for (const c of CASES.filter((x) => !x.needs_resample_or_downmix)) {
      const raw = await decodeAudio(await fs.readFile(golden(c.audio)), c.audio);
      const a = fe.extract(raw.samples);
      const b = js.extract(raw.samples);
      expect(diff(a, b).max).toBeLessThan(1e-4);
      measured[`${c.name} (JavaScript loops)`] = diff(b, await expectedData(c.keys['input_features']!)).max;
      expect(measured[`${c.name} (JavaScript loops)`]).toBeLessThanOrEqual(TOL.input_features.atol);
    }
    js.dispose();
  });

  test('silence gives the clamp value everywhere', () => {
    const out = fe.extract(new Float32Array(1000));
    expect(new Set(out)).toEqual(new Set([Math.fround(-1.5)]));
  });

  test('reuses a caller-provided output buffer and rejects a wrong size', () => {
    const out = new Float32Array(80 * 3000);
    expect(fe.extract(Float32Array.of(0.5, -0.5), out)).toBe(out);
    expect(() => fe.extract(Float32Array.of(1), new Float32Array(5))).toThrow(RangeError);
  });

  test('absurdly loud input is reported, not turned into garbage', () => {
    expect(() => fe.extract(new Float32Array(4000).fill(1e30))).toThrow(/overflows float32/);
  });

  test('invalid preprocessor configs are ConfigValidationErrors naming the field', async () => {
    const err = await WhisperFeatureExtractor.create({ n_fft: 401 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigValidationError);
    expect((err as ConfigValidationError).path).toBe('/n_fft');
    await expect(WhisperFeatureExtractor.create({ feature_size: 0 })).rejects.toThrow(/feature_size/);
  });
});

describe('FFT engines and the fast log', () => {
  test.each([[400, 'pffft-simd'], [200, 'pffft'], [14, 'dft']])('n_fft %i (%s) gives the naive DFT power spectrum', async (n, engine) => {
    const fft = await PairedPowerSpectrum.create(n);
    expect(fft.engine).toBe(engine);
    const src = Float32Array.from({ length: 3 * n }, (_, i) => Math.sin(i * 0.37) + 0.3 * Math.cos(i * 1.91));
    const win = Float64Array.from({ length: n }, (_, j) => 0.5 - 0.5 * Math.cos((2 * Math.PI * j) / n));
    const bins = n / 2 + 1;
    const a = new Float64Array(bins);
    const b = new Float64Array(bins);
    fft.power2(src, 0, n + 3, win, a, 0, b, 0);
    for (const [off, got] of [[0, a], [n + 3, b]] as const) {
      for (let k = 0; k < bins; k++) {
        let re = 0;
        let im = 0;
        for (let j = 0; j < n; j++) {
          re += src[off + j]! * win[j]! * Math.cos((2 * Math.PI * j * k) / n);
          im -= src[off + j]! * win[j]! * Math.sin((2 * Math.PI * j * k) / n);
        }
        const p = re * re + im * im;
        expect(Math.abs(got[k]! - p)).toBeLessThanOrEqual(1e-4 * Math.max(1, p));
      }
    }
    fft.dispose();
  });

  test('fastLog10 is within 1e-7 of Math.log10 over the float32 range', () => {
    const x = Float32Array.from({ length: 20000 }, (_, i) => 10 ** (-12 + (i / 20000) * 50) * (1 + (i % 7) / 10));
    const l = fastLog10(x);
    let max = 0;
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(l[i]! - Math.log10(x[i]!)));
    expect(max).toBeLessThan(1e-7);
  });
});
