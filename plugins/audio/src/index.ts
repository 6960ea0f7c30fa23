/**
 * @multimeditron/plugin-audio (work in progress: the modality is being written).
 * @packageDocumentation
 */
import { definePlugin } from '@multimeditron/core';

export default definePlugin({ name: '@multimeditron/plugin-audio', version: '0.1.0', apiVersion: 1, modalities: [], loaders: [] });
