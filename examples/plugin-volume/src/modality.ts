/**
 * `VolumeModality` (`volume_3d`): a small 3-D patch encoder (a Conv3D whose stride equals its kernel, i.e.
 * one embedding per non-overlapping patch), average pooling over the patch grid, then core's projector.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { BaseModality, createProjector, RegisterModality, ShapeError } from '@multimeditron/core';
import { VOLUME_MODEL_TYPE, VolumeConfig } from './config.js';
import { VolumeProcessor } from './processor.js';

/**
 * The volume modality. Its encoder needs no pretrained checkpoint: the weights start from `config.seed`
 * (PyTorch's default Conv3d initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and can be trained and
 * saved with {@link VolumeModality.savePretrained}, which, unlike the base class, includes the encoder.
 *
 * Weights (PyTorch layouts): `patch_embed.weight` (embedDim, 1, pd, ph, pw), `patch_embed.bias` (embedDim),
 * `projector.layers.*`.
 */
@RegisterModality(VOLUME_MODEL_TYPE, { config: VolumeConfig, processor: VolumeProcessor })
export class VolumeModality extends BaseModality<VolumeConfig, VolumeProcessor> {
  private patchWeight: tf.Variable | undefined;
  private patchBias: tf.Variable | undefined;

  /** Builds the processor, the seeded patch encoder (frozen) and the projector (trainable). */
  protected async load(): Promise<void> {
    const c = this.config;
    this.processor = new VolumeProcessor(c);
    await this.processor.init(this.ctx);
    const [pd, ph, pw] = c.patchSize;
    const bound = 1 / Math.sqrt(pd * ph * pw);
    // tf.variable keeps a reference to its initial tensor's data: dispose the initial tensors.
    const w0 = tf.randomUniform([c.embedDim, 1, pd, ph, pw], -bound, bound, 'float32', c.seed);
    const b0 = tf.randomUniform([c.embedDim], -bound, bound, 'float32', c.seed + 1);
    try {
      this.patchWeight = tf.variable(w0, false);
      this.patchBias = tf.variable(b0, false);
    } finally {
      tf.dispose([w0, b0]);
    }
    this.projector = createProjector({ type: c.projectionType, inputDim: c.embedDim, outputDim: c.hiddenSize, seed: c.seed + 2 });
  }

  /** `patch_embed.weight` and `patch_embed.bias`. */
  encoderVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    if (this.patchWeight) out.set('patch_embed.weight', this.patchWeight);
    if (this.patchBias) out.set('patch_embed.bias', this.patchBias);
    return out;
  }

  /** [b, 1, D, H, W] -> pooled patch embeddings [b, numEmbeddings, embedDim]. */
  private encode(batch: tf.Tensor): tf.Tensor3D {
    const c = this.config;
    const [D, H, W] = c.volumeSize;
    const s = batch.shape;
    if (s.length !== 5 || s[1] !== 1 || s[2] !== D || s[3] !== H || s[4] !== W) {
      throw new ShapeError(`${VOLUME_MODEL_TYPE}: expected inputs of shape [batch, 1, ${D}, ${H}, ${W}], got [${s.join(', ')}]`);
    }
    return tf.tidy(() => {
      const x = tf.transpose(batch, [0, 2, 3, 4, 1]) as tf.Tensor5D; // NCDHW -> NDHWC
      const filter = tf.transpose(this.patchWeight!, [2, 3, 4, 1, 0]) as tf.Tensor5D; // (out,in,d,h,w) -> (d,h,w,in,out)
      let y = tf.add(tf.conv3d(x, filter, c.patchSize, 'valid'), this.patchBias!) as tf.Tensor5D;
      if (c.poolSize.some((p) => p !== 1)) y = tf.avgPool3d(y, c.poolSize, c.poolSize, 'valid');
      return tf.reshape(y, [s[0]!, c.numEmbeddings(), c.embedDim]) as tf.Tensor3D;
    });
  }

  /** Encoder, then projector: [b, 1, D, H, W] -> [b, numEmbeddings, hiddenSize]. */
  protected embedBatch(batch: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => this.projector.apply(this.encode(batch)));
  }

  /** The pooled patch embeddings as `last_hidden_state` [b, numEmbeddings, embedDim] (for `features`). */
  override encodeFeatures(batch: tf.Tensor): Record<string, tf.Tensor> {
    return { last_hidden_state: this.encode(batch) };
  }

  /** Saves config.json and model.safetensors with the encoder included by default (it has no other source). */
  override async savePretrained(dir: string, options: { includeEncoder?: boolean } = {}): Promise<void> {
    await super.savePretrained(dir, { includeEncoder: true, ...options });
  }

  /** Releases every variable. */
  override dispose(): void {
    super.dispose();
    this.patchWeight = undefined;
    this.patchBias = undefined;
  }
}
