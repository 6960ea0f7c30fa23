/**
 * Worker-thread side of {@link ClipForwardPool}: one wasm backend and one inference-only CLIP tower per
 * worker. Messages: `{kind: 'forward', id, data, shape}` -> `{kind: 'result', id, outputs}` or
 * `{kind: 'error', id, message}`.
 * @internal
 */
import { parentPort, workerData } from 'node:worker_threads';
import 'reflect-metadata';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@multimeditron/core';
import { ClipVisionEncoder, type ClipVisionConfig } from '../clip-vision.js';

/** What the pool passes as `workerData`. */
export interface ForwardWorkerInit {
  model?: string;
  random?: { config: ClipVisionConfig; seed?: number };
  outputs: Array<'last_hidden_state' | 'pooler_output' | 'image_embeds'>;
  attention?: 'auto' | 'batched' | 'per-head';
}

/** A request from the pool. */
export interface ForwardRequest {
  kind: 'forward';
  id: number;
  data: Float32Array;
  shape: number[];
}

async function main(): Promise<void> {
  const port = parentPort!;
  const init = workerData as ForwardWorkerInit;
  let encoder: ClipVisionEncoder;
  try {
    await selectBackend({ backend: 'wasm' });
    encoder = init.model ? await ClipVisionEncoder.load(init.model) : ClipVisionEncoder.random(init.random!.config, init.random!.seed ?? 0);
    encoder.releaseCheckpointLayout();
  } catch (e) {
    port.postMessage({ kind: 'init-error', message: (e as Error).message, name: (e as Error).name });
    return;
  }
  port.postMessage({ kind: 'ready', config: encoder.config, hasProjection: encoder.hasProjection });
  port.on('message', (msg: ForwardRequest | { kind: 'close' }) => {
    if (msg.kind === 'close') {
      encoder.dispose();
      port.close();
      return;
    }
    try {
      const wantPooled = init.outputs.includes('pooler_output') || init.outputs.includes('image_embeds');
      const outputs: Record<string, { data: Float32Array; shape: number[] }> = {};
      tf.tidy(() => {
        const x = tf.tensor(msg.data, msg.shape, 'float32');
        const out = encoder.forward(x, { pooled: wantPooled, ...(init.attention ? { attention: init.attention } : {}) });
        const put = (name: string, t: tf.Tensor | undefined) => {
          if (t && init.outputs.includes(name as ForwardWorkerInit['outputs'][number])) {
            outputs[name] = { data: t.dataSync() as Float32Array, shape: [...t.shape] };
          }
        };
        put('last_hidden_state', out.lastHiddenState);
        put('pooler_output', out.poolerOutput);
        put('image_embeds', out.imageEmbeds);
      });
      port.postMessage({ kind: 'result', id: msg.id, outputs }, Object.values(outputs).map((o) => o.data.buffer as ArrayBuffer));
    } catch (e) {
      port.postMessage({ kind: 'error', id: msg.id, message: (e as Error).message, name: (e as Error).name });
    }
  });
}

void main();
