/**
 * `@multimeditron-examples/plugin-volume`: an example third-party plugin, written only against the public
 * API of `@multimeditron/core`. It adds the `image_3d` modality type: 3-D medical volumes read from NumPy
 * `.npy` files and NIfTI images (`fs-volume`, `raw-volume`), processed to `(1, D, H, W)` in [0, 1], and
 * embedded by a Conv3D patch encoder with average pooling and an MLP projector (`volume_3d`).
 * @packageDocumentation
 */
import 'reflect-metadata';
import { definePlugin } from '@multimeditron/core';
import { FsVolumeLoader, RawVolumeLoader } from './loaders.js';
import { VolumeModality } from './modality.js';

export * from './config.js';
export * from './loaders.js';
export * from './modality.js';
export * from './processor.js';
export * from './resize.js';
export * from './volume.js';

/** The plugin manifest: what a host registers when it loads this package. */
export default definePlugin({
  name: '@multimeditron-examples/plugin-volume',
  version: '0.1.0',
  apiVersion: 1,
  modalities: [VolumeModality],
  loaders: [FsVolumeLoader, RawVolumeLoader],
});
