/**
 * `ImageConfig`: the configuration of the `meditron_clip` modality.
 * @module
 */
import { BASE_MODALITY_CONFIG_SCHEMA, BaseModalityConfig, extendSchema, PROJECTION_TYPES, type ProjectionType } from '@multimeditron/core';

/** Registry name of the image modality (the config's `modelType`), as in the Python original. */
export const IMAGE_MODEL_TYPE = 'meditron_clip';
/** The dataset `type` the image modality handles. */
export const IMAGE_MODALITY_TYPE = 'image';

/**
 * Configuration of the `meditron_clip` modality, saved as `config.json`. Fields (with defaults):
 *
 * - `modelType` `"meditron_clip"`, `modalityType` `"image"` (fixed);
 * - `clipName` `"openai/clip-vit-large-patch14"`: a local folder or hub id of a Hugging Face CLIP checkpoint
 *   (`CLIPModel` or `CLIPVisionModel` form), resolved through the instance's model resolver;
 * - `hiddenSize` 4096: the LLM's token size, i.e. the projector's output size;
 * - `maxBatchSize` 32: largest batch of one encoder call; larger inputs are chunked;
 * - `projectionType` `"mlp"` (`"mlp"`, `"linear"` or `"pixel_shuffle"`);
 * - `pixelShuffleFactor` 2: the fold factor of `pixel_shuffle` (tokens are divided by its square).
 *
 * Unknown keys are kept and written back, as Hugging Face configs keep their kwargs.
 */
export class ImageConfig extends BaseModalityConfig {
  /** JSON Schema: the base modality schema plus the fields above. */
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: IMAGE_MODEL_TYPE, default: IMAGE_MODEL_TYPE },
      modalityType: { const: IMAGE_MODALITY_TYPE, default: IMAGE_MODALITY_TYPE },
      clipName: { type: 'string', minLength: 1, default: 'openai/clip-vit-large-patch14' },
      projectionType: { enum: [...PROJECTION_TYPES], default: 'mlp' },
      pixelShuffleFactor: { type: 'integer', minimum: 1, default: 2 },
    },
    required: ['clipName', 'projectionType', 'pixelShuffleFactor'],
  });

  /** Local folder or hub id of the CLIP checkpoint. */
  declare clipName: string;
  /** Projector kind. */
  declare projectionType: ProjectionType;
  /** Fold factor of the `pixel_shuffle` projector. */
  declare pixelShuffleFactor: number;
}
