import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigValidationError, createMultimeditron, getLoaderRegistration, getModalityRegistration, InputError, ModelLoadError, selectBackend,
  type HostTensor, type Multimeditron, type ProcessedModality,
} from '@multimeditron/core';
import plugin, {
  AudioConfig, AudioModality, FsAudioLoader, RawAudioLoader, WhisperProcessor, type RawAudio,
} from '@multimeditron/plugin-audio';
import { CASES, compare, diff, expectedData, golden, makeWav, RecordingLogger, tempDir, TOL, WHISPER_DIR } from './helpers.js';

let mm: Multimeditron;
let logger: RecordingLogger;
let tmp: string;
let feats: Float32Array[];
const measured: Record<string, number> = {};

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  tmp = await tempDir();
  logger = new RecordingLogger();
  mm = await createMultimeditron({ plugins: [plugin], backend: false, logger, resolver: { offline: true, cacheDir: path.join(tmp, 'hub') } });
  feats = await Promise.all(CASES.map((c) => expectedData(c.keys['input_features']!)));
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
  process.stdout.write(`plugin-audio end-to-end parity: ${JSON.stringify(measured)}\n`);
});

const host = (data: Float32Array): HostTensor => ({ data, shape: [80, 3000] });

/** Runs `f` in a tidy scope and returns a host copy of its tensor (never a typed array out of tf.tidy: slow). */
function hostOf(f: () => tf.Tensor): Float32Array {
  const t = tf.tidy(f);
  const data = t.dataSync().slice() as Float32Array;
  t.dispose();
  return data;
}

async function whisper(overrides: Record<string, unknown> = {}): Promise<AudioModality> {
  return (await mm.modalities.fromPretrained('meditron_whisper', { whisperName: WHISPER_DIR, hiddenSize: 16, ...overrides })) as AudioModality;
}

describe('plugin manifest and registration', () => {
  test('manifest lists the modality and both loaders; the instance registers them', () => {
    expect(plugin).toMatchObject({ name: '@multimeditron/plugin-audio', apiVersion: 1, modalities: [AudioModality], loaders: [FsAudioLoader, RawAudioLoader] });
    expect(mm.plugins.errors).toEqual([]);
    expect(mm.modalities.names()).toContain('meditron_whisper');
    expect(mm.loaders.forModalityType('audio').sort()).toEqual(['fs-audio', 'raw-audio']);
    expect(getModalityRegistration(AudioModality)).toMatchObject({
      name: 'meditron_whisper', modalityType: 'audio', config: AudioConfig, processor: WhisperProcessor,
      encoderKey: 'whisperName', encoderModelTypes: ['whisper'],
    });
    expect(getLoaderRegistration(FsAudioLoader)).toMatchObject({ name: 'fs-audio', modalityType: 'audio' });
  });

  test('AudioConfig: defaults, pixel_shuffle rejected, bad fields named', () => {
    const c = new AudioConfig({});
    expect(c.toJSON()).toMatchObject({
      modelType: 'meditron_whisper', modalityType: 'audio', whisperName: 'openai/whisper-base', projectionType: 'mlp',
      poolingStride: 1, longAudio: 'truncate', hiddenSize: 4096, maxBatchSize: 32,
    });
    const err = (() => { try { return new AudioConfig({ projectionType: 'pixel_shuffle' } as never); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(ConfigValidationError);
    expect((err as ConfigValidationError).path).toBe('/projectionType');
    expect(() => new AudioConfig({ poolingStride: 0 } as never)).toThrow(/poolingStride/);
    expect(() => new AudioConfig({ longAudio: 'keep' } as never)).toThrow(/longAudio/);
    expect(new AudioConfig({ custom: 1 } as never).toJSON()).toMatchObject({ custom: 1 });
  });
});

describe('AudioModality', () => {
  test('forward: [b, 1500, hiddenSize] = projector(encoder(features)), no tensor leak', async () => {
    const m = await whisper();
    try {
      expect(m.numEmbeddings).toBe(1500);
      expect(m.processor.numEmbeddings).toBe(1500);
      expect(m.processor.inputName).toBe('input_features');
      const before = tf.memory().numTensors;
      const out = m.forward([host(feats[1]!), host(feats[2]!)]);
      expect(out.shape).toEqual([2, 1500, 16]);
      const got = out.dataSync().slice();
      out.dispose();
      expect(tf.memory().numTensors).toBe(before);
      // the projector applied to the expected encoder output
      const expected = await Promise.all([1, 2].map((i) => expectedData(CASES[i]!.keys['last_hidden_state']!)));
      const proj = hostOf(() => m.projector.apply(tf.tensor3d(Float32Array.from([...expected[0]!, ...expected[1]!]), [2, 1500, 32])));
      expect(diff(got, proj).max).toBeLessThan(1e-4);
    } finally {
      m.dispose();
    }
  });

  test('poolingStride averages over time before the projector (1500 / 4 = 375, 1500 / 7 -> 214)', async () => {
    for (const stride of [4, 7]) {
      const m = await whisper({ poolingStride: stride, projectionType: 'linear' });
      try {
        const n = Math.floor(1500 / stride);
        expect(m.numEmbeddings).toBe(n);
        expect(m.processor.numEmbeddings).toBe(n);
        const before = tf.memory().numTensors;
        const out = m.forward([host(feats[3]!)]);
        expect(out.shape).toEqual([1, n, 16]);
        const got = out.dataSync().slice();
        out.dispose();
        expect(tf.memory().numTensors).toBe(before);
        const last = await expectedData(CASES[3]!.keys['last_hidden_state']!);
        const pooled = new Float32Array(n * 32);
        for (let t = 0; t < n; t++) {
          for (let d = 0; d < 32; d++) {
            let s = 0;
            for (let k = 0; k < stride; k++) s += last[(t * stride + k) * 32 + d]!;
            pooled[t * 32 + d] = s / stride;
          }
        }
        const ref = hostOf(() => m.projector.apply(tf.tensor3d(pooled, [1, n, 32])));
        expect(diff(got, ref).max).toBeLessThan(1e-4);
      } finally {
        m.dispose();
      }
    }
  });

  test('maxBatchSize chunks the batch: same result, no chunk larger than the limit', async () => {
    const m = await whisper({ maxBatchSize: 2, projectionType: 'linear' });
    try {
      const sizes: number[] = [];
      const embed = (m as unknown as { embedBatch(b: tf.Tensor): tf.Tensor3D }).embedBatch.bind(m);
      (m as unknown as { embedBatch(b: tf.Tensor): tf.Tensor3D }).embedBatch = (b) => {
        sizes.push(b.shape[0]!);
        return embed(b);
      };
      const inputs = [0, 1, 2].map((i) => host(feats[i]!));
      const before = tf.memory().numTensors;
      const chunked = m.forward(inputs);
      expect(sizes).toEqual([2, 1]);
      m.config.maxBatchSize = 8;
      const whole = m.forward(inputs);
      expect(sizes).toEqual([2, 1, 3]);
      expect(chunked.shape).toEqual([3, 1500, 16]);
      expect(diff(chunked.dataSync(), whole.dataSync()).max).toBeLessThan(1e-5);
      tf.dispose([chunked, whole]);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.dispose();
    }
  });

  test('encodeFeatures gives last_hidden_state; the encoder is frozen, the projector trainable', async () => {
    const m = await whisper({ projectionType: 'linear' });
    try {
      const x = tf.tensor3d(feats[4]!, [1, 80, 3000]);
      const before = tf.memory().numTensors;
      const f = m.encodeFeatures(x);
      expect(Object.keys(f)).toEqual(['last_hidden_state']);
      const tol = TOL.last_hidden_state;
      expect(compare(f['last_hidden_state']!.dataSync(), await expectedData(CASES[4]!.keys['last_hidden_state']!), tol.atol, tol.rtol).ok).toBe(true);
      tf.dispose(f['last_hidden_state']!);
      expect(tf.memory().numTensors).toBe(before);
      x.dispose();

      expect(m.trainableVariableNames().sort()).toEqual(['projector.layers.0.bias', 'projector.layers.0.weight']);
      m.unfreezeModalityEmbedder();
      const all = m.trainableVariableNames();
      expect(all).toContain('encoder.conv1.weight');
      expect(all).toContain('encoder.layers.1.self_attn.k_proj.weight');
      expect(all.length).toBe(37 + 2);
      m.freezeProjection();
      expect(m.trainableVariableNames().some((n) => n.startsWith('projector.'))).toBe(false);
      m.freezeAll();
      expect(m.trainableVariableNames()).toEqual([]);
      m.unfreezeAll();
      expect(m.trainableVariableNames().length).toBe(39);
      m.freezeModalityEmbedder();
      expect(m.trainableVariableNames().length).toBe(2);
    } finally {
      m.dispose();
    }
  });

  test('savePretrained / fromPretrained keep the projector weights', async () => {
    const m = await whisper({ projectionType: 'mlp', hiddenSize: 8 });
    const dir = path.join(tmp, 'saved');
    try {
      await m.savePretrained(dir);
      const saved = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'));
      expect(saved).toMatchObject({ modelType: 'meditron_whisper', whisperName: WHISPER_DIR, projectionType: 'mlp', hiddenSize: 8 });
      const again = (await mm.modalities.fromPretrained(dir)) as AudioModality;
      try {
        for (const [k, v] of m.projector.namedWeights()) {
          expect(diff(again.projector.namedWeights().get(k)!.dataSync(), v.dataSync()).max).toBe(0);
        }
      } finally {
        again.dispose();
      }
    } finally {
      m.dispose();
    }
  });

  test('a poolingStride longer than the sequence is a ConfigValidationError at load', async () => {
    const before = tf.memory().numTensors;
    await expect(whisper({ poolingStride: 1501 })).rejects.toBeInstanceOf(ConfigValidationError);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('loaders -> processor -> modality', () => {
  test('fs-audio + processor + forward on every golden file; stereo_44k1 end to end within the loose encoder tolerance', async () => {
    const loader = mm.loaders.create('fs-audio', { basePath: golden('audio') });
    const m = await whisper({ projectionType: 'linear' });
    try {
      for (const c of CASES) {
        const raw = (await loader.load({ type: 'audio', value: path.basename(c.audio) })) as RawAudio;
        expect(raw).toMatchObject({ sampleRate: c.sample_rate, channels: c.channels, source: golden(c.audio) });
        const p = m.processor.process({ type: 'audio', value: raw }) as ProcessedModality;
        expect(p).toMatchObject({ type: 'audio', numEmbeddings: 1500 });
        expect(p.value.shape).toEqual([80, 3000]);
        const exp = await expectedData(c.keys['input_features']!);
        const fd = diff(p.value.data, exp);
        measured[`${c.name} input_features`] = fd.max;
        if (c.needs_resample_or_downmix) {
          expect(fd.max).toBeLessThanOrEqual(TOL.resampled_input_features_torchaudio_sinc_reimplementation.atol);
          const x = tf.tensor3d(p.value.data as Float32Array, [1, 80, 3000]);
          const f = m.encodeFeatures(x);
          const ed = diff(f['last_hidden_state']!.dataSync(), await expectedData(c.keys['last_hidden_state']!));
          measured[`${c.name} last_hidden_state (end to end)`] = ed.max;
          tf.dispose([x, f['last_hidden_state']!]);
          expect(ed.max).toBeLessThanOrEqual(TOL.resampled_other_resampler_loose.last_hidden_state_max_abs);
          expect(ed.mean).toBeLessThanOrEqual(TOL.resampled_other_resampler_loose.last_hidden_state_mean_abs);
        } else {
          expect(fd.max).toBeLessThanOrEqual(TOL.input_features.atol);
        }
      }
    } finally {
      m.dispose();
    }
  });

  test('long audio: truncated with a warning by default; split mode gives consecutive 30 s windows', async () => {
    const loader = mm.loaders.create('fs-audio', { basePath: golden('audio') });
    const raw = (await loader.load({ type: 'audio', value: 'long_35s.wav' })) as RawAudio;
    const truncate = await mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: WHISPER_DIR }) as WhisperProcessor;
    logger.messages.length = 0;
    const one = truncate.processAll({ type: 'audio', value: raw });
    expect(one).toHaveLength(1);
    expect(logger.warnings).toHaveLength(1);
    expect(logger.warnings[0]).toMatch(/long_35s\.wav: 35\.00 s of audio is longer than the 30 s window; only the first 30 s are used/);
    expect(diff(one[0]!.value.data, await expectedData('long_35s.input_features')).max).toBeLessThanOrEqual(TOL.input_features.atol);

    const split = await mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: WHISPER_DIR, longAudio: 'split', poolingStride: 2 }) as WhisperProcessor;
    logger.messages.length = 0;
    const two = split.process({ type: 'audio', value: raw }) as ProcessedModality[];
    expect(Array.isArray(two)).toBe(true);
    expect(two.map((p) => p.numEmbeddings)).toEqual([750, 750]);
    expect(logger.warnings).toEqual([]);
    expect(diff(two[0]!.value.data, one[0]!.value.data).max).toBe(0);
    const tail = new Float32Array(480000);
    tail.set(raw.samples.subarray(480000));
    expect(diff(two[1]!.value.data, split.featureExtractor.extract(tail)).max).toBe(0);
    // short audio stays one window in split mode
    const short = split.process({ type: 'audio', value: { samples: new Float32Array(16000), sampleRate: 16000, channels: 1, source: 's' } });
    expect(Array.isArray(short)).toBe(false);
  });

  test('raw-audio: Buffer, base64, {bytes}, {bytes, path}; targetSampleRate', async () => {
    const bytes = await fs.readFile(golden('audio', 'speech_2s.wav'));
    const loader = mm.loaders.create('raw-audio');
    const ref = (await loader.load({ type: 'audio', value: bytes })) as RawAudio;
    expect(ref).toMatchObject({ sampleRate: 16000, channels: 1, source: '<bytes>', format: 'wav' });
    for (const value of [bytes.toString('base64'), { bytes }, { bytes: bytes.toString('base64') }, new Uint8Array(bytes)]) {
      const r = (await loader.load({ type: 'audio', value })) as RawAudio;
      expect(diff(r.samples, ref.samples).max).toBe(0);
    }
    const bad = makeWav({ sampleRate: 0, data: new Uint8Array(4) });
    await expect(loader.load({ type: 'audio', value: { bytes: bad, path: 'clips/zero-rate.wav' } })).rejects.toThrow(/^clips\/zero-rate\.wav: WAV header declares a sample rate of 0 Hz/);
    const stereo = await fs.readFile(golden('audio', 'stereo_44k1.wav'));
    const at16 = (await mm.loaders.create('raw-audio', { targetSampleRate: 16000 }).load({ type: 'audio', value: stereo })) as RawAudio;
    expect(at16.sampleRate).toBe(16000);
    expect(diff(at16.samples, await expectedData('stereo_44k1.waveform_16k')).max).toBeLessThanOrEqual(TOL.waveform_16k.atol);
    expect(() => mm.loaders.create('raw-audio', { targetSampleRate: 0 })).toThrow(ConfigValidationError);
  });

  test('fs-audio refuses paths outside its base folder and names missing files', async () => {
    const loader = mm.loaders.create('fs-audio', { basePath: golden('audio') });
    await expect(loader.load({ type: 'audio', value: '../whisper-tiny/config.json' })).rejects.toThrow(/outside the base folder/);
    const err = await loader.load({ type: 'audio', value: 'nope.wav' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).file).toBe(golden('audio', 'nope.wav'));
    expect((err as Error).message).toMatch(/cannot read: ENOENT/);
    await expect(loader.load({ type: 'audio', value: 42 })).rejects.toBeInstanceOf(InputError);
  });

  test('one bad file never stops the batch: the others complete', async () => {
    const dir = path.join(tmp, 'batch');
    await fs.mkdir(dir, { recursive: true });
    const good = await fs.readFile(golden('audio', 'tone_440hz_3s.wav'));
    const pcm = good.subarray(44, 44 + 3200);
    const files: Record<string, Uint8Array> = {
      'a-good.wav': good,
      'b-truncated-header.wav': good.subarray(0, 30),
      'c-data-too-long.wav': makeWav({ data: pcm, dataSize: 10_000_000 }),
      'd-empty-data.wav': makeWav({ data: new Uint8Array(0) }),
      'e-mp3-in-wav.wav': makeWav({ formatTag: 0x55, data: pcm }),
      'f-unknown.bin': Buffer.from('definitely not a recording'),
      'g-nan.wav': makeWav({ formatTag: 3, bits: 32, data: new Uint8Array(new Float32Array([0.1, NaN, 0.2]).buffer) }),
      'h-zero-rate.wav': makeWav({ sampleRate: 0, data: pcm }),
      'i-good-copy.wav': good,
    };
    for (const [name, b] of Object.entries(files)) await fs.writeFile(path.join(dir, name), b);
    const loader = mm.loaders.create('fs-audio', { basePath: dir });
    const processor = await mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: WHISPER_DIR }) as WhisperProcessor;
    const results = await Promise.allSettled(Object.keys(files).map(async (name) => {
      const raw = await loader.load({ type: 'audio', value: name });
      return processor.processAll({ type: 'audio', value: raw as RawAudio });
    }));
    const names = Object.keys(files);
    results.forEach((r, i) => {
      const good = names[i]!.includes('good');
      expect({ name: names[i], status: r.status }).toEqual({ name: names[i], status: good ? 'fulfilled' : 'rejected' });
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(InputError);
        expect((r.reason as InputError).file).toBe(path.join(dir, names[i]!));
      } else {
        expect(r.value[0]!.value.shape).toEqual([80, 3000]);
      }
    });
  });

  test('without preprocessor_config.json the processor warns and uses the defaults with config.json num_mel_bins', async () => {
    const dir = path.join(tmp, 'no-preprocessor');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'whisper', num_mel_bins: 128 }));
    logger.messages.length = 0;
    const p = await mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: dir }) as WhisperProcessor;
    expect(p.featureExtractor.shape).toEqual([128, 3000]);
    expect(logger.warnings.join()).toMatch(/preprocessor_config\.json not found: using WhisperFeatureExtractor defaults \(feature_size 128\)/);
    await fs.writeFile(path.join(dir, 'preprocessor_config.json'), '{ not json');
    await expect(mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: dir })).rejects.toBeInstanceOf(ModelLoadError);
  });

  test('the processor rejects values that are not loaded recordings, and non-finite samples', async () => {
    const p = await mm.modalities.processorFor({ modelType: 'meditron_whisper', whisperName: WHISPER_DIR }) as WhisperProcessor;
    expect(() => p.process({ type: 'audio', value: 'x.wav' as never })).toThrow(InputError);
    expect(() => p.process({ type: 'audio', value: { samples: new Float32Array(0), sampleRate: 16000, channels: 1, source: 'e.wav' } })).toThrow(/e\.wav: no audio samples/);
    expect(() => p.process({ type: 'audio', value: { samples: Float32Array.of(0, Infinity), sampleRate: 16000, channels: 1, source: 'i.wav' } })).toThrow(/i\.wav: non-finite sample/);
    expect(() => p.process({ type: 'audio', value: { samples: Float32Array.of(0), sampleRate: 0, channels: 1, source: 'z.wav' } })).toThrow(/z\.wav: invalid sample rate 0/);
  });
});
