/**
 * `AudioConfig`: the configuration of the `meditron_whisper` modality.
 * @module
 */
import { BASE_MODALITY_CONFIG_SCHEMA, BaseModalityConfig, extendSchema } from '@multimeditron/core';
import type { LongAudioMode } from './features.js';

/** Projectors that make sense for a 1-D token sequence. */
export type AudioProjectionType = 'mlp' | 'linear';

/**
 * Configuration of the Whisper audio modality (`modelType` `meditron_whisper`, `modalityType` `audio`).
 *
 * `projectionType` accepts `mlp` (the original's) and `linear`. `pixel_shuffle` folds f x f neighbours of a
 * square 2-D patch grid; Whisper's output is a 1-D sequence of 1500 frames, so it is rejected by the schema
 * (a {@link ConfigValidationError} at `/projectionType`). To shorten the sequence use `poolingStride`.
 */
export class AudioConfig extends BaseModalityConfig {
  /** JSON Schema: the base fields plus the audio ones, with defaults. */
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: 'meditron_whisper', default: 'meditron_whisper' },
      modalityType: { const: 'audio', default: 'audio' },
      whisperName: { type: 'string', minLength: 1, default: 'openai/whisper-base' },
      projectionType: { enum: ['mlp', 'linear'], default: 'mlp' },
      poolingStride: { type: 'integer', minimum: 1, default: 1 },
      longAudio: { enum: ['truncate', 'split'], default: 'truncate' },
    },
    required: ['whisperName', 'projectionType', 'poolingStride', 'longAudio'],
  });

  /** Local folder or hub id of a Hugging Face Whisper checkpoint (its encoder is used). */
  declare whisperName: string;
  /** Projector from the encoder width to `hiddenSize`: `mlp` (default) or `linear`. */
  declare projectionType: AudioProjectionType;
  /**
   * Average pooling over time after the encoder, kernel = stride = `poolingStride` (PyTorch `AvgPool1d`
   * semantics: a remainder shorter than the stride is dropped). 1 (default) = no pooling; the modality then
   * yields `floor(1500 / poolingStride)` embeddings per 30 s window.
   */
  declare poolingStride: number;
  /**
   * Recordings longer than the 30 s window: `truncate` (default; keeps the first 30 s and logs a warning, as
   * Hugging Face's feature extractor does silently) or `split` (consecutive 30 s windows, each one encoder
   * input; their embeddings follow each other in the entry's placeholder).
   */
  declare longAudio: LongAudioMode;
}
