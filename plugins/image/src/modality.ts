/**
 * `ImageModality` (`meditron_clip`): a frozen CLIP vision tower followed by a trainable projector to the
 * LLM's hidden size. Its embedding of an image is the projected patch tokens of the last encoder layer
 * (`last_hidden_state[:, 1:, :]`, the class token dropped), as in the Python original.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { BaseModality, ConfigValidationError, createProjector, MultimeditronError, RegisterModality, shapeSize, ShapeError, type HostTensor } from '@multimeditron/core';
import { ClipForwardPool, type ClipForwardPoolOptions } from './forward-pool.js';
import { ClipVisionEncoder, numPatches } from './clip-vision.js';
import { ImageConfig, IMAGE_MODEL_TYPE } from './config.js';
import { ImageProcessor } from './processor.js';

/**
 * The image modality. Build it through an instance (`mm.modalities.fromPretrained('meditron_clip', {...})`)
 * or directly with `ImageModality.fromConfig(new ImageConfig({...}), ctx)`.
 *
 * - `forward(pixelValues[])` -> [n, numEmbeddings, hiddenSize] (chunked by `maxBatchSize`);
 * - `encodeFeatures(batch)` -> `{ last_hidden_state, pooler_output, image_embeds? }` (raw encoder outputs);
 * - the encoder weights are frozen by default, the projector is trainable.
 */
@RegisterModality(IMAGE_MODEL_TYPE, {
  config: ImageConfig,
  processor: ImageProcessor,
  encoderKey: 'clipName',
  encoderModelTypes: ['clip', 'clip_vision_model'],
})
export class ImageModality extends BaseModality<ImageConfig, ImageProcessor> {
  /** The CLIP vision tower (set by `load`). */
  encoder!: ClipVisionEncoder;
  /** The local folder `clipName` resolved to (set by `load`). */
  checkpointDir!: string;

  /** Resolves `clipName`, loads the tower, reads the processor configuration and builds the projector. */
  protected async load(): Promise<void> {
    const dir = await this.ctx.resolver.resolve(this.config.clipName);
    const encoder = await ClipVisionEncoder.load(dir);
    try {
      const processor = new ImageProcessor(this.config);
      await processor.initFromFolder(dir, this.ctx.logger, encoder.config);
      const projector = createProjector({
        type: this.config.projectionType,
        inputDim: encoder.config.hiddenSize,
        outputDim: this.config.hiddenSize,
        pixelShuffleFactor: this.config.pixelShuffleFactor,
      });
      let tokens: number;
      try {
        tokens = projector.outputTokens(numPatches(encoder.config));
      } catch (e) {
        projector.dispose();
        throw new ConfigValidationError('ImageConfig', [
          { path: '/pixelShuffleFactor', rule: 'multipleOf', message: (e as Error).message },
        ], { cause: e });
      }
      if (tokens !== processor.numEmbeddings) {
        projector.dispose();
        throw new MultimeditronError('E_INTERNAL', `projector gives ${tokens} tokens but the processor announces ${processor.numEmbeddings}`);
      }
      this.encoder = encoder;
      this.checkpointDir = dir;
      this.processor = processor;
      this.projector = projector;
    } catch (e) {
      encoder.dispose();
      throw e;
    }
  }

  /** Token slots per image (after the projector). */
  get numEmbeddings(): number {
    return this.processor.numEmbeddings;
  }

  /** [b, 3, s, s] -> last_hidden_state[:, 1:, :] -> projector -> [b, numEmbeddings, hiddenSize]. */
  protected embedBatch(batch: tf.Tensor): tf.Tensor3D {
    return this.project(this.projectorInputBatch(batch));
  }

  /** [b, 3, s, s] -> last_hidden_state[:, 1:, :] (the patch rows, CLS dropped): the projector's input. */
  protected override projectorInputBatch(batch: tf.Tensor): tf.Tensor3D {
    const { lastHiddenState } = this.encoder.forward(batch, { pooled: false });
    const [b, n, d] = lastHiddenState.shape;
    return tf.slice(lastHiddenState, [0, 1, 0], [b, n - 1, d]);
  }

  /** The tower's weights by Hugging Face checkpoint name (`vision_model.…`, `visual_projection.weight`). */
  encoderVariables(): Map<string, tf.Variable> {
    return this.encoder.weights;
  }

  /**
   * Raw encoder outputs for one batch [b, 3, s, s]: `last_hidden_state` [b, 1 + patches, width],
   * `pooler_output` [b, width] and, when the checkpoint has a visual projection, `image_embeds`
   * [b, projectionDim]. The caller owns the tensors.
   */
  override encodeFeatures(batch: tf.Tensor): Record<string, tf.Tensor> {
    const out = this.encoder.forward(batch);
    const features: Record<string, tf.Tensor> = { last_hidden_state: out.lastHiddenState, pooler_output: out.poolerOutput! };
    if (out.imageEmbeds) features['image_embeds'] = out.imageEmbeds;
    return features;
  }

  /**
   * Starts a {@link ClipForwardPool} (worker threads, one wasm backend and one copy of the tower each) on this
   * modality's checkpoint, for {@link forwardWithPool}. Opt-in: it costs one copy of the encoder weights per
   * worker. Close it with `pool.close()`.
   */
  async createForwardPool(options: Omit<ClipForwardPoolOptions, 'model' | 'random' | 'outputs'> = {}): Promise<ClipForwardPool> {
    return ClipForwardPool.create({ ...options, model: this.checkpointDir, outputs: ['last_hidden_state'] });
  }

  /**
   * {@link forward} with the encoder running data-parallel on `pool`'s worker threads (chunks of
   * `maxBatchSize` split across the workers); the projector runs here, so it trains as usual. The workers
   * hold the checkpoint's weights: the encoder must be frozen. Returns [n, numEmbeddings, hiddenSize].
   */
  async forwardWithPool(inputs: Array<HostTensor | tf.Tensor>, pool: ClipForwardPool): Promise<tf.Tensor3D> {
    if (inputs.length === 0) throw new ShapeError('forwardWithPool() needs at least one input');
    if ([...this.encoderVariables().values()].some((v) => v.trainable)) {
      throw new MultimeditronError('E_CONFIG', 'forwardWithPool needs a frozen encoder: the pool workers run the checkpoint weights');
    }
    const shape = inputs[0]!.shape;
    const per = shapeSize(shape);
    const size = this.config.maxBatchSize;
    const lasts: HostTensor[] = [];
    for (let i = 0; i < inputs.length; i += size) {
      const chunk = inputs.slice(i, i + size);
      const data = new Float32Array(chunk.length * per);
      chunk.forEach((x, j) => {
        if (x.shape.join() !== shape.join()) throw new ShapeError(`forwardWithPool(): inputs differ in shape ([${shape}] vs [${x.shape}])`);
        data.set(x instanceof tf.Tensor ? x.dataSync() : x.data, j * per);
      });
      const out = await pool.forward({ data, shape: [chunk.length, ...shape] });
      lasts.push(out.last_hidden_state!);
    }
    return tf.tidy(() => {
      const parts = lasts.map((l) => {
        const t = tf.tensor3d(l.data as Float32Array, l.shape as [number, number, number]);
        const [b, n, d] = t.shape;
        return this.projector.apply(tf.slice(t, [0, 1, 0], [b, n - 1, d]));
      });
      return parts.length === 1 ? parts[0]! : (tf.concat(parts, 0) as tf.Tensor3D);
    });
  }

  /** Releases the encoder and projector weights. */
  override dispose(): void {
    this.encoder?.dispose();
    this.projector?.dispose();
  }
}
