/**
 * @multimeditron/plugin-image: the image modality of MultiMeditron.ts.
 *
 * - loaders `raw-image` ({@link RawImageLoader}) and `fs-image` ({@link FsImageLoader}): sharp decoding with
 *   Pillow's `convert("RGB")` semantics;
 * - {@link ImageProcessor}: Hugging Face `CLIPImageProcessor` (PIL backend), bit-exact resize + crop;
 * - {@link ImageModality} (`meditron_clip`): a CLIP vision tower loaded from Hugging Face checkpoints plus a
 *   trainable projector.
 * @packageDocumentation
 */
import 'reflect-metadata';
import { definePlugin } from '@multimeditron/core';
import { FsImageLoader, RawImageLoader } from './loaders.js';
import { ImageModality } from './modality.js';

export * from './decode.js';
export * from './loaders.js';
export * from './preprocessor-config.js';
export * from './image-ops.js';
export * from './processor.js';
export * from './config.js';
export * from './clip-vision.js';
export * from './modality.js';
export * from './forward-pool.js';

/** The package version, as in package.json. */
export const VERSION = '0.1.0';

/** The plugin manifest: the `meditron_clip` modality and the `raw-image` / `fs-image` loaders. */
export default definePlugin({
  name: '@multimeditron/plugin-image',
  version: VERSION,
  apiVersion: 1,
  modalities: [ImageModality],
  loaders: [RawImageLoader, FsImageLoader],
});
