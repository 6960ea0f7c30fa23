/**
 * Worker-thread entry of the embedding run (runs as plain JS from core's dist). Builds its own instance
 * (plugins, no backend), its loaders and its processors (no weights), then loads and processes the samples
 * it is sent, returning host tensors as transferables.
 * @module
 */
import 'reflect-metadata';
import { parentPort, workerData } from 'node:worker_threads';
import { ConsoleLogger } from '../../context.js';
import { createMultimeditron } from '../../multimeditron.js';
import { buildUnits, processTask, toTaskError, type ProcessingSetup, type ProcessingUnits } from './process.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './pool.js';

async function init(data: WorkerInit): Promise<ProcessingUnits> {
  const mm = await createMultimeditron({
    plugins: data.plugins,
    hostRoot: data.hostRoot,
    backend: false,
    strict: true,
    logger: new ConsoleLogger('error'),
  });
  const setup: ProcessingSetup = { modalities: data.modalities, loaders: data.loaders, allowOutsideBase: data.allowOutsideBase };
  return buildUnits(mm, setup, (config) => mm.modalities.processorFor(config));
}

/** Transfers whole buffers; copies views into shared or pooled buffers (which cannot be transferred). */
function transferable(reply: WorkerReply): ArrayBuffer[] {
  if (reply.type !== 'result' || !reply.result.ok) return [];
  const seen = new Set<ArrayBufferLike>();
  for (const parts of reply.result.entries) {
    for (const p of parts) {
      const d = p.value.data;
      if (d.byteOffset !== 0 || d.byteLength !== d.buffer.byteLength || seen.has(d.buffer) || !(d.buffer instanceof ArrayBuffer)) {
        p.value = { data: d.slice(), shape: p.value.shape };
      }
      seen.add(p.value.data.buffer);
    }
  }
  return [...seen] as ArrayBuffer[];
}

const port = parentPort;
if (port) {
  const ready = init(workerData as WorkerInit);
  ready.then(
    () => port.postMessage({ type: 'ready' } satisfies WorkerReply),
    (e) => port.postMessage({ type: 'init-error', error: toTaskError(e, 'worker') } satisfies WorkerReply),
  );
  port.on('message', (msg: WorkerRequest) => {
    void ready.then(async (units) => {
      const result = await processTask(units, msg.task);
      const reply: WorkerReply = { type: 'result', id: msg.id, result };
      port.postMessage(reply, transferable(reply));
    }, () => undefined);
  });
}
