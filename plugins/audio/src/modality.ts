/**
 * `AudioModality` (`meditron_whisper`): Whisper encoder -> optional average pooling over time -> projector.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  BaseModality, ConfigValidationError, createProjector, ModelLoadError, RegisterModality, ShapeError,
} from '@multimeditron/core';
import { AudioConfig } from './config.js';
import { WhisperEncoder } from './encoder.js';
import { WhisperProcessor } from './processor.js';

/**
 * The audio modality: embeds Whisper `input_features` `[b, n_mels, 3000]` into
 * `[b, floor(1500 / poolingStride), hiddenSize]`. The encoder comes from the Hugging Face checkpoint named by
 * `whisperName` (frozen: its weights are tf.Variables with `trainable = false` until
 * `unfreezeModalityEmbedder()`); the projector (`mlp` or `linear`) is new and trainable.
 */
@RegisterModality('meditron_whisper', {
  config: AudioConfig,
  processor: WhisperProcessor,
  encoderKey: 'whisperName',
  encoderModelTypes: ['whisper'],
})
export class AudioModality extends BaseModality<AudioConfig, WhisperProcessor> {
  /** The Whisper encoder (set by `load`). */
  encoder!: WhisperEncoder;

  /** The folder the checkpoint was resolved to. */
  checkpointDir = '';

  protected async load(): Promise<void> {
    const dir = await this.ctx.resolver.resolve(this.config.whisperName);
    this.checkpointDir = dir;
    const encoder = await WhisperEncoder.fromPretrained(dir);
    let processor: WhisperProcessor | undefined;
    try {
      processor = new WhisperProcessor(this.config);
      await processor.init(this.ctx);
      const fe = processor.featureExtractor;
      if (fe.featureSize !== encoder.config.numMelBins) {
        throw new ModelLoadError(dir, `preprocessor_config.json has feature_size ${fe.featureSize} but config.json has num_mel_bins ${encoder.config.numMelBins}`);
      }
      if (fe.numFrames !== encoder.inputFrames) {
        throw new ModelLoadError(dir, `the feature extractor gives ${fe.numFrames} frames but the encoder expects ${encoder.inputFrames} (2 x max_source_positions)`);
      }
      if (processor.numEmbeddings < 1) {
        throw new ConfigValidationError(AudioConfig.name, [{
          path: '/poolingStride', rule: 'maximum',
          message: `must be at most the encoder's ${encoder.config.maxSourcePositions} output frames`,
        }]);
      }
      this.processor = processor;
      this.encoder = encoder;
      this.projector = createProjector({
        type: this.config.projectionType, inputDim: encoder.config.dModel, outputDim: this.config.hiddenSize,
      });
    } catch (e) {
      encoder.dispose();
      try {
        processor?.featureExtractor.dispose(); // the FFT's WebAssembly buffers, when init got that far
      } catch {
        // not initialised: nothing to free
      }
      throw e;
    }
  }

  /** Embeddings per 30 s window: `floor(max_source_positions / poolingStride)`. */
  get numEmbeddings(): number {
    return Math.floor(this.encoder.config.maxSourcePositions / this.config.poolingStride);
  }

  /** Average pooling over time, kernel = stride = `poolingStride` (remainder dropped). */
  private pool(h: tf.Tensor3D): tf.Tensor3D {
    const s = this.config.poolingStride;
    if (s === 1) return h;
    const [b, T, d] = h.shape;
    const n = Math.floor(T / s);
    const kept = n * s === T ? h : tf.slice(h, [0, 0, 0], [b, n * s, d]);
    return tf.mean(tf.reshape(kept, [b, n, s, d]), 2) as tf.Tensor3D;
  }

  protected embedBatch(batch: tf.Tensor): tf.Tensor3D {
    return this.project(this.projectorInputBatch(batch));
  }

  /** [b, n_mels, frames] -> the pooled encoder states: the projector's input. */
  protected override projectorInputBatch(batch: tf.Tensor): tf.Tensor3D {
    if (batch.rank !== 3) throw new ShapeError(`meditron_whisper expects input_features batches [b, n_mels, frames], got [${batch.shape}]`);
    return this.pool(this.encoder.forward(batch).lastHiddenState);
  }

  /** `{ last_hidden_state }` of the encoder for a batch `[b, n_mels, 3000]`; the caller owns it. */
  override encodeFeatures(batch: tf.Tensor): Record<string, tf.Tensor> {
    return { last_hidden_state: this.encoder.forward(batch).lastHiddenState };
  }

  /** The encoder weights under their `WhisperModel` names (`encoder.*`). */
  encoderVariables(): Map<string, tf.Variable> {
    return this.encoder.variables;
  }

  /** Releases the encoder, the projector and the feature extractor's WebAssembly buffers. */
  override dispose(): void {
    super.dispose();
    this.processor?.featureExtractor.dispose();
  }
}
