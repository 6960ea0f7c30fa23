/**
 * Small TypeScript modalities and loaders for the registry, DI and modality tests. The plugin tests use the
 * plain-JavaScript equivalent written into throwaway packages (see plugin-packages.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModality, BaseModalityConfig, BaseModalityLoader, BaseModalityProcessor, createProjector,
  extendSchema, hostTensor, InputError, type ModalityInput, type ProcessedModality,
} from '@multimeditron/core';

/** Config of a modality named `name` for dataset type `modalityType`. */
export function configClass(name: string, modalityType: string) {
  const C = class extends BaseModalityConfig {
    static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
      properties: {
        modelType: { const: name, default: name },
        modalityType: { const: modalityType, default: modalityType },
        inputDim: { type: 'integer', minimum: 1, default: 3 },
        featureDim: { type: 'integer', minimum: 1, default: 4 },
        tokens: { type: 'integer', minimum: 1, default: 2 },
        seed: { type: 'integer', default: 1 },
      },
    });
    declare inputDim: number;
    declare featureDim: number;
    declare tokens: number;
    declare seed: number;
  };
  Object.defineProperty(C, 'name', { value: `${name}Config` });
  return C;
}

/** The fields the toy classes read. */
export interface DenseConfig extends BaseModalityConfig {
  inputDim: number;
  featureDim: number;
  tokens: number;
  seed: number;
}

/** Turns an array of tokens x inputDim numbers into a host tensor. */
export class DenseProcessor extends BaseModalityProcessor<ArrayLike<number>, DenseConfig> {
  override readonly inputName = 'dense_values';

  process(modality: ModalityInput<ArrayLike<number>>): ProcessedModality {
    const { tokens, inputDim } = this.config;
    if (modality.value.length !== tokens * inputDim) {
      throw new InputError('<dense>', `expected ${tokens * inputDim} numbers, got ${modality.value.length}`);
    }
    return { type: modality.type, value: hostTensor(Float32Array.from(modality.value), [tokens, inputDim]), numEmbeddings: tokens };
  }
}

/** Encoder: one [inputDim, featureDim] matrix; projector: core's `linear`. */
export class DenseModality extends BaseModality<DenseConfig, DenseProcessor> {
  encoder!: tf.Variable;

  protected async load(): Promise<void> {
    const { inputDim, featureDim, hiddenSize, seed } = this.config;
    const init = tf.randomUniform([inputDim, featureDim], -1, 1, 'float32', seed);
    this.encoder = tf.variable(init, false);
    init.dispose();
    this.projector = createProjector({ type: 'linear', inputDim: featureDim, outputDim: hiddenSize, seed: seed + 1 });
    this.processor = new DenseProcessor(this.config);
  }

  protected embedBatch(batch: tf.Tensor): tf.Tensor3D {
    const [b, n, d] = batch.shape as [number, number, number];
    const features = tf.reshape(tf.matMul(tf.reshape(batch, [b * n, d]), this.encoder), [b, n, this.config.featureDim]);
    return this.projector.apply(features as tf.Tensor3D);
  }

  encoderVariables(): Map<string, tf.Variable> {
    return new Map([['encoder.weight', this.encoder]]);
  }
}

/** A loader that returns the value as numbers. */
export class ArrayLoader extends BaseModalityLoader<Float32Array> {
  async load(modality: ModalityInput): Promise<Float32Array> {
    if (!Array.isArray(modality.value)) throw new InputError('<array>', 'expected an array of numbers');
    return Float32Array.from(modality.value as number[]);
  }
}
