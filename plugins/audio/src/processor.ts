/**
 * `WhisperProcessor`: loaded audio -> Whisper `input_features` (log-mel, `[n_mels, 3000]` per 30 s window).
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  BaseModalityProcessor, ConsoleLogger, InputError, readJsonFile, type Logger, type ModalityContext, type ModalityInput,
  type ProcessedModality,
} from '@multimeditron/core';
import type { AudioConfig } from './config.js';
import type { RawAudio } from './decode.js';
import { WhisperFeatureExtractor, type WhisperFeatureExtractorConfig } from './features.js';
import { resample } from './resample.js';

/** Largest tolerated difference between a legacy `mel_filters` list and the filter bank we build. */
const LEGACY_MEL_TOLERANCE = 1e-6;

/**
 * Turns a {@link RawAudio} into Whisper's `input_features`, exactly as Hugging Face's `WhisperFeatureExtractor`
 * does, after resampling to the extractor's `sampling_rate` when the recording has another rate. `init` reads
 * `preprocessor_config.json` from the checkpoint named by `whisperName`.
 *
 * Longer than 30 s: by default the first window is kept and a warning is logged; with `longAudio: 'split'`
 * every consecutive 30 s window becomes one encoder input (an array is returned).
 */
export class WhisperProcessor extends BaseModalityProcessor<RawAudio, AudioConfig> {
  override readonly inputName = 'input_features';
  private fe: WhisperFeatureExtractor | undefined;
  private logger: Logger = new ConsoleLogger();

  /** The feature extractor (after {@link init}). */
  get featureExtractor(): WhisperFeatureExtractor {
    if (!this.fe) throw new Error('WhisperProcessor used before init()');
    return this.fe;
  }

  /** Resolves `whisperName` and reads its `preprocessor_config.json`. */
  override async init(ctx: ModalityContext): Promise<void> {
    this.logger = ctx.logger;
    const dir = await ctx.resolver.resolve(this.config.whisperName);
    await this.initFromDir(dir);
  }

  /**
   * Builds the extractor from a local model folder. Without `preprocessor_config.json`, Whisper's defaults
   * are used with `num_mel_bins` from `config.json`, and a warning is logged.
   */
  async initFromDir(dir: string): Promise<void> {
    const file = path.join(dir, 'preprocessor_config.json');
    let json: WhisperFeatureExtractorConfig;
    if (await fs.access(file).then(() => true, () => false)) {
      json = (await readJsonFile(file)) as WhisperFeatureExtractorConfig;
    } else {
      const model = (await readJsonFile(path.join(dir, 'config.json')).catch(() => ({}))) as Record<string, unknown>;
      json = typeof model['num_mel_bins'] === 'number' ? { feature_size: model['num_mel_bins'] } : {};
      this.logger.warn(`${file} not found: using WhisperFeatureExtractor defaults (feature_size ${json.feature_size ?? 80})`);
    }
    this.fe?.dispose();
    this.fe = await WhisperFeatureExtractor.create(json, file);
    const legacy = this.fe.compareLegacyMelFilters();
    if (legacy !== undefined && legacy > LEGACY_MEL_TOLERANCE) {
      this.logger.warn(`${file}: its "mel_filters" differ from the slaney filter bank by up to ${legacy.toExponential(2)}; using the computed bank`);
    }
  }

  /** Token slots per 30 s window: encoder frames (half the mel frames) divided by the pooling stride. */
  get numEmbeddings(): number {
    const frames = Math.ceil(this.featureExtractor.numFrames / 2);
    return Math.floor(frames / (this.config.poolingStride ?? 1));
  }

  /** `input_features` of one loaded recording (one window, or several with `longAudio: 'split'`). */
  process(modality: ModalityInput<RawAudio>): ProcessedModality | ProcessedModality[] {
    const fe = this.featureExtractor;
    const raw = modality.value as Partial<RawAudio> | undefined;
    const source = typeof raw?.source === 'string' ? raw.source : '<audio>';
    if (!raw || !(raw.samples instanceof Float32Array) || typeof raw.sampleRate !== 'number') {
      throw new InputError(source, 'expected a loaded recording {samples: Float32Array, sampleRate} (use the fs-audio or raw-audio loader)');
    }
    if (!(raw.sampleRate > 0) || !Number.isInteger(raw.sampleRate)) throw new InputError(source, `invalid sample rate ${raw.sampleRate}`);
    let x = raw.samples;
    if (x.length === 0) throw new InputError(source, 'no audio samples');
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i]!)) throw new InputError(source, `non-finite sample (${x[i]}) at frame ${i}`);
    }
    if (raw.sampleRate !== fe.samplingRate) x = resample(x, raw.sampleRate, fe.samplingRate);
    const mode = this.config.longAudio ?? 'truncate';
    if (mode === 'truncate' && x.length > fe.nSamples) {
      this.logger.warn(
        `${source}: ${(x.length / fe.samplingRate).toFixed(2)} s of audio is longer than the ${fe.nSamples / fe.samplingRate} s window; ` +
          `only the first ${fe.nSamples / fe.samplingRate} s are used (set longAudio: "split" to keep everything)`,
      );
    }
    const numEmbeddings = this.numEmbeddings;
    const out = fe.windows(x, mode).map((w): ProcessedModality => {
      let data: Float32Array;
      try {
        data = fe.extract(w);
      } catch (e) {
        throw new InputError(source, (e as Error).message, { cause: e });
      }
      return { type: modality.type, value: { data, shape: fe.shape }, numEmbeddings };
    });
    return out.length === 1 ? out[0]! : out;
  }
}
