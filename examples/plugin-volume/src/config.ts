/**
 * `VolumeConfig`: configures both the volume processor and the volume modality.
 * @module
 */
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModalityConfig, ConfigValidationError, extendSchema, type ModalityConfigJSON,
} from '@multimeditron/core';

/** Registry name of the volume modality (the config's `modelType`), as in the original. */
export const VOLUME_MODEL_TYPE = 'volume_3d';

/** Three positive integers, one per axis (D, H, W). */
export type Triple = [number, number, number];

const triple = (def: Triple, description: string) => ({
  type: 'array',
  items: { type: 'integer', minimum: 1 },
  minItems: 3,
  maxItems: 3,
  default: def,
  description,
});

/** The JSON form of a {@link VolumeConfig}. */
export interface VolumeConfigJSON extends ModalityConfigJSON {
  volumeSize: Triple;
  patchSize: Triple;
  poolSize: Triple;
  embedDim: number;
  projectionType: 'mlp' | 'linear';
  seed: number;
}

/**
 * Configuration of the `volume_3d` modality. Defaults follow the original's volume config:
 * a (32, 256, 256) volume cut into (4, 16, 16) patches, pooled by (2, 2, 2): 4 x 8 x 8 = 256 tokens.
 *
 * Beyond the schema, the constructor checks that `volumeSize` is divisible by `patchSize` and the patch
 * grid by `poolSize`, per axis.
 */
export class VolumeConfig extends BaseModalityConfig {
  /** JSON Schema: the base fields plus the volume fields, with defaults. */
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: VOLUME_MODEL_TYPE, default: VOLUME_MODEL_TYPE },
      modalityType: { const: 'image_3d', default: 'image_3d' },
      volumeSize: triple([32, 256, 256], 'Size (D, H, W) every volume is resized to.'),
      patchSize: triple([4, 16, 16], 'Size (d, h, w) of the non-overlapping patches the encoder embeds.'),
      poolSize: triple([2, 2, 2], 'Average-pooling window over the patch grid; sets the token count.'),
      embedDim: { type: 'integer', minimum: 1, default: 768, description: 'Patch embedding size (the projector input).' },
      projectionType: { enum: ['mlp', 'linear'], default: 'mlp', description: 'Projector to the LLM hidden size.' },
      seed: { type: 'integer', minimum: 0, default: 0, description: 'Seed of the initial weights.' },
    },
  });

  /** Size (D, H, W) every volume is resized to. */
  declare volumeSize: Triple;
  /** Patch size (d, h, w); the Conv3D kernel and stride. */
  declare patchSize: Triple;
  /** Average-pooling window over the patch grid. */
  declare poolSize: Triple;
  /** Patch embedding size. */
  declare embedDim: number;
  /** Projector kind (`mlp` as in the original, or `linear`). */
  declare projectionType: 'mlp' | 'linear';
  /** Seed of the initial weights. */
  declare seed: number;

  constructor(values: Partial<VolumeConfigJSON> = {}) {
    super(values);
    const issues = [];
    for (let a = 0; a < 3; a++) {
      const axis = 'DHW'[a];
      if (this.volumeSize[a]! % this.patchSize[a]! !== 0) {
        issues.push({
          path: `/volumeSize/${a}`, rule: 'multipleOf',
          message: `volumeSize ${axis} (${this.volumeSize[a]}) must be a multiple of patchSize ${axis} (${this.patchSize[a]})`,
        });
      } else if ((this.volumeSize[a]! / this.patchSize[a]!) % this.poolSize[a]! !== 0) {
        issues.push({
          path: `/poolSize/${a}`, rule: 'multipleOf',
          message: `the patch grid ${axis} (${this.volumeSize[a]! / this.patchSize[a]!}) must be a multiple of poolSize ${axis} (${this.poolSize[a]})`,
        });
      }
    }
    if (issues.length) throw new ConfigValidationError(new.target.name, issues);
  }

  /** Patches per axis: volumeSize / patchSize. */
  patchGrid(): Triple {
    return [0, 1, 2].map((a) => this.volumeSize[a]! / this.patchSize[a]!) as Triple;
  }

  /** Tokens per axis after pooling: patchGrid / poolSize. */
  tokenGrid(): Triple {
    const g = this.patchGrid();
    return [0, 1, 2].map((a) => g[a]! / this.poolSize[a]!) as Triple;
  }

  /** Token slots one volume takes in the LLM input: the product of {@link tokenGrid}. */
  numEmbeddings(): number {
    return this.tokenGrid().reduce((a, b) => a * b, 1);
  }
}
