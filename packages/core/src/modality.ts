/**
 * Step 3 of the pipeline: a modality embeds processed inputs. It owns a pretrained encoder (frozen by
 * default) and a trainable {@link Projector} to the LLM's hidden size.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { BaseModalityConfig } from './config.js';
import type { ModalityContext } from './context.js';
import { ModelLoadError, ShapeError } from './errors.js';
import type { BaseModalityProcessor } from './processor.js';
import type { Projector } from './projectors.js';
import { FLOAT_DTYPES, SafetensorsCheckpoint, writeSafetensors } from './safetensors.js';
import { isHostTensor, toTensor, type HostTensor } from './tensor.js';

/** Constructor type of a modality class. */
export interface ModalityClass<M extends BaseModality = BaseModality> {
  new (config: any, ctx: ModalityContext): M; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Builds and loads a modality (see {@link BaseModality.fromConfig}). */
  fromConfig(config: BaseModalityConfig, ctx: ModalityContext): Promise<M>;
  readonly name: string;
}

/** File name of a saved modality's weights. */
export const MODALITY_WEIGHTS_FILE = 'model.safetensors';

/**
 * Base class of modalities. Subclasses implement {@link load} (build the encoder, its processor and its
 * projector), {@link embedBatch} and {@link encoderVariables}; the base handles batching by
 * `maxBatchSize`, freezing, tidy memory management and save/load of the trained weights.
 */
export abstract class BaseModality<
  C extends BaseModalityConfig = BaseModalityConfig,
  P extends BaseModalityProcessor = BaseModalityProcessor,
> {
  /** The processor matching this modality (set by {@link load}). */
  processor!: P;
  /** The projector to the LLM hidden size (set by {@link load}). */
  projector!: Projector;

  constructor(
    readonly config: C,
    protected readonly ctx: ModalityContext,
  ) {}

  /** Builds and loads a modality: constructor, then {@link load}. */
  static async fromConfig<M extends BaseModality>(
    this: new (config: any, ctx: ModalityContext) => M, // eslint-disable-line @typescript-eslint/no-explicit-any
    config: BaseModalityConfig,
    ctx: ModalityContext,
  ): Promise<M> {
    const m = new this(config, ctx);
    await m.load();
    return m;
  }

  /** Loads the encoder weights, builds the processor and the projector. */
  protected abstract load(): Promise<void>;

  /**
   * Embeds one chunk (at most `maxBatchSize` examples): [b, ...input] -> [b, numEmbeddings, hiddenSize].
   * Called inside `tf.tidy` by {@link forward}.
   */
  protected abstract embedBatch(batch: tf.Tensor): tf.Tensor3D;

  /**
   * The encoder's weights by checkpoint name (frozen by default). Create them with `tf.variable(init, false)`
   * and no name: tfjs variable names are global to the engine, so a fixed name forbids a second instance.
   */
  abstract encoderVariables(): Map<string, tf.Variable>;

  /**
   * Raw encoder outputs for one batch (e.g. `last_hidden_state`, `pooler_output`), used by the `features`
   * command. The caller owns the returned tensors. Default: none.
   */
  encodeFeatures(_batch: tf.Tensor): Record<string, tf.Tensor> {
    return {};
  }

  /**
   * Embeds a list of processed inputs (host tensors or tfjs tensors, one example each, without batch
   * dimension). Inputs are stacked and run in chunks of at most `config.maxBatchSize`.
   * Returns [n, numEmbeddings, hiddenSize]; the caller owns it.
   */
  forward(inputs: Array<HostTensor | tf.Tensor>): tf.Tensor3D {
    if (inputs.length === 0) throw new ShapeError('forward() needs at least one input');
    for (const [i, x] of inputs.entries()) {
      if (!(x instanceof tf.Tensor) && !isHostTensor(x)) {
        throw new ShapeError(`forward(): input ${i} is neither a HostTensor nor a tfjs Tensor (a second copy of @tensorflow/tfjs-core?)`);
      }
    }
    const shape = inputs[0]!.shape;
    for (const x of inputs) {
      if (x.shape.join() !== shape.join()) {
        throw new ShapeError(`forward(): inputs differ in shape ([${shape}] vs [${x.shape}])`);
      }
    }
    const size = this.config.maxBatchSize;
    return tf.tidy(() => {
      const outs: tf.Tensor3D[] = [];
      for (let i = 0; i < inputs.length; i += size) {
        const chunk = inputs.slice(i, i + size).map((x) => (x instanceof tf.Tensor ? x : toTensor(x)));
        outs.push(this.embedBatch(tf.stack(chunk)));
      }
      return outs.length === 1 ? outs[0]! : (tf.concat(outs, 0) as tf.Tensor3D);
    });
  }

  /**
   * The frozen half of {@link embedBatch}, for feature caches: one chunk [b, ...input] -> the projector's input
   * [b, tokens, features]. A modality whose `embedBatch` is `project(projectorInputBatch(batch))` overrides it (the
   * built-in image and audio modalities do); the default (undefined) means the modality cannot be split, and a
   * trainer then runs the whole {@link forward} every time.
   */
  protected projectorInputBatch?(batch: tf.Tensor): tf.Tensor3D;

  /** Whether {@link projectorInputs} / {@link project} are available (see {@link projectorInputBatch}). */
  get canCacheFeatures(): boolean {
    return typeof this.projectorInputBatch === 'function';
  }

  /**
   * The projector inputs of a list of processed inputs (chunked by `maxBatchSize` like {@link forward}):
   * [n, tokens, features]. With a frozen encoder these do not change during training, so a trainer computes them
   * once. The caller owns the result. Throws when the modality does not split ({@link canCacheFeatures}).
   */
  projectorInputs(inputs: Array<HostTensor | tf.Tensor>): tf.Tensor3D {
    const projectorInputBatch = this.projectorInputBatch;
    if (typeof projectorInputBatch !== 'function') throw new ShapeError(`${this.constructor.name} does not split into projectorInputs() and project()`);
    if (inputs.length === 0) throw new ShapeError('projectorInputs() needs at least one input');
    const size = this.config.maxBatchSize;
    return tf.tidy(() => {
      const outs: tf.Tensor3D[] = [];
      for (let i = 0; i < inputs.length; i += size) {
        const chunk = inputs.slice(i, i + size).map((x) => (x instanceof tf.Tensor ? x : toTensor(x)));
        outs.push(projectorInputBatch.call(this, tf.stack(chunk)));
      }
      return outs.length === 1 ? outs[0]! : (tf.concat(outs, 0) as tf.Tensor3D);
    });
  }

  /** The trainable half: projector inputs [n, tokens, features] -> embeddings [n, numEmbeddings, hiddenSize]. */
  project(features: tf.Tensor3D): tf.Tensor3D {
    return this.projector.apply(features);
  }

  /** Every variable: encoder weights under their checkpoint names, projector weights under `projector.*`. */
  namedVariables(): Map<string, tf.Variable> {
    const out = new Map(this.encoderVariables());
    for (const [k, v] of this.projector.namedWeights()) out.set(`projector.${k}`, v);
    return out;
  }

  /** Variables currently marked trainable. */
  trainableVariables(): tf.Variable[] {
    return [...this.namedVariables().values()].filter((v) => v.trainable);
  }

  /** Names of the variables currently marked trainable. */
  trainableVariableNames(): string[] {
    return [...this.namedVariables()].filter(([, v]) => v.trainable).map(([k]) => k);
  }

  /** Freezes the pretrained encoder. */
  freezeModalityEmbedder(): void {
    for (const v of this.encoderVariables().values()) v.trainable = false;
  }

  /** Makes the pretrained encoder trainable. */
  unfreezeModalityEmbedder(): void {
    for (const v of this.encoderVariables().values()) v.trainable = true;
  }

  /** Freezes the projector. */
  freezeProjection(): void {
    this.projector.setTrainable(false);
  }

  /** Makes the projector trainable. */
  unfreezeProjection(): void {
    this.projector.setTrainable(true);
  }

  /** Freezes everything. */
  freezeAll(): void {
    this.freezeModalityEmbedder();
    this.freezeProjection();
  }

  /** Makes everything trainable. */
  unfreezeAll(): void {
    this.unfreezeModalityEmbedder();
    this.unfreezeProjection();
  }

  /**
   * Saves `config.json` and `model.safetensors` (projector weights, plus the encoder weights when
   * `includeEncoder` is set, e.g. after END2END/FULL training).
   */
  async savePretrained(dir: string, options: { includeEncoder?: boolean } = {}): Promise<void> {
    await this.config.save(dir);
    const tensors = new Map<string, { data: Float32Array; shape: number[] }>();
    const vars = options.includeEncoder ? this.namedVariables() : new Map([...this.projector.namedWeights()].map(([k, v]) => [`projector.${k}`, v]));
    for (const [k, v] of vars) tensors.set(k, { data: v.dataSync() as Float32Array, shape: [...v.shape] });
    await writeSafetensors(path.join(dir, MODALITY_WEIGHTS_FILE), tensors, { format: 'multimeditron' });
  }

  /**
   * Overwrites variables from a saved `model.safetensors` (as written by {@link savePretrained}). Every key
   * must name a variable of this modality with the same shape, and the file must exist; otherwise a
   * {@link ModelLoadError} naming the file (and key) is thrown before any variable changes. Variables absent
   * from the file (the frozen encoder, when only the projector was saved) keep their values.
   */
  async loadSavedWeights(dir: string): Promise<void> {
    const file = path.join(dir, MODALITY_WEIGHTS_FILE);
    if (!(await fs.access(file).then(() => true, () => false))) {
      throw new ModelLoadError(file, 'missing: a saved modality folder holds config.json and model.safetensors', undefined, {
        suggestions: ['Save the modality with savePretrained(dir), or build a fresh one with fromConfig().'],
      });
    }
    const ckpt = await SafetensorsCheckpoint.open(file);
    try {
      const vars = this.namedVariables();
      for (const k of ckpt.keys()) {
        const v = vars.get(k);
        if (!v) throw new ModelLoadError(file, 'matches no variable of this modality', k);
        const { shape, dtype } = ckpt.info(k);
        if (!FLOAT_DTYPES.has(dtype)) throw new ModelLoadError(file, `dtype ${dtype} is not a float type`, k);
        if (shape.join() !== v.shape.join()) throw new ModelLoadError(file, `shape [${shape}] != [${v.shape}]`, k);
      }
      for (const k of ckpt.keys()) {
        const t = await ckpt.readTensor(k);
        try {
          vars.get(k)!.assign(t);
        } finally {
          t.dispose();
        }
      }
    } finally {
      await ckpt.close();
    }
  }

  /** Releases every variable. */
  dispose(): void {
    for (const v of this.encoderVariables().values()) v.dispose();
    this.projector?.dispose();
  }
}
