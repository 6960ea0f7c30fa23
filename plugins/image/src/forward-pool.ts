/**
 * `ClipForwardPool`: data-parallel CLIP vision forward passes on worker threads (opt-in).
 *
 * tfjs' wasm backend runs single-threaded under Node (its threaded build needs pthread workers that Node
 * refuses to start from `blob:` URLs), so one process uses one core for the encoder. The pool starts
 * `workers` threads, each with its own wasm backend and its own inference-only copy of the tower, splits
 * each batch into contiguous chunks, and gathers the outputs in order. Each worker holds a full copy of the
 * weights (ViT-B: ~350 MB in float32, ViT-L: ~1.2 GB).
 *
 * The workers load the weights from the checkpoint folder: use the pool for a frozen encoder (the usual
 * case: the projector, which trains, runs on the main thread; see `ImageModality.forwardWithPool`).
 * @module
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { hostTensor, MultimeditronError, ShapeError, type HostTensor } from '@multimeditron/core';
import type { ClipVisionConfig } from './clip-vision.js';
import type { ForwardWorkerInit } from './internal/forward-worker.js';

/** Outputs a pool can return. */
export type PoolOutputName = 'last_hidden_state' | 'pooler_output' | 'image_embeds';

/** Options of {@link ClipForwardPool.create}. */
export interface ClipForwardPoolOptions {
  /** Number of worker threads. Default: `os.availableParallelism()`. */
  workers?: number;
  /** A local CLIP checkpoint folder (resolve hub ids first, e.g. with the instance's model resolver). */
  model?: string;
  /** Random weights of the given size instead of a checkpoint (benchmarks). */
  random?: { config: ClipVisionConfig; seed?: number };
  /** Which outputs to compute and send back. Default: all three (image_embeds only if the checkpoint has it). */
  outputs?: PoolOutputName[];
  /** Attention implementation in the workers (see `ClipForwardOptions.attention`). */
  attention?: 'auto' | 'batched' | 'per-head';
  /** The worker script (default: the compiled `internal/forward-worker.js` next to this module). */
  workerScript?: string | URL;
}

/** Outputs of {@link ClipForwardPool.forward}, as host tensors with the batch dimension first. */
export type PoolOutputs = Partial<Record<PoolOutputName, HostTensor<Float32Array>>>;

interface Pending {
  resolve: (v: Record<string, { data: Float32Array; shape: number[] }>) => void;
  reject: (e: Error) => void;
}

class PoolWorker {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private dead: Error | undefined;

  constructor(readonly worker: Worker) {
    worker.on('message', (m: { kind: string; id?: number; outputs?: Record<string, { data: Float32Array; shape: number[] }>; message?: string }) => {
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.kind === 'result') p.resolve(m.outputs!);
      else p.reject(new MultimeditronError('E_WORKER', `forward worker: ${m.message}`));
    });
    const fail = (e: Error) => {
      this.dead = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', (e) => fail(new MultimeditronError('E_WORKER', `forward worker crashed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => {
      if (code !== 0) fail(new MultimeditronError('E_WORKER', `forward worker exited with code ${code}`));
    });
  }

  run(data: Float32Array, shape: number[]): Promise<Record<string, { data: Float32Array; shape: number[] }>> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ kind: 'forward', id, data, shape }, [data.buffer as ArrayBuffer]);
    });
  }
}

/**
 * A pool of worker threads running the CLIP vision tower. Create with {@link ClipForwardPool.create},
 * release with {@link close}.
 */
export class ClipForwardPool {
  private closed = false;

  private constructor(
    private readonly workers: PoolWorker[],
    /** The tower's configuration (as read by the first worker). */
    readonly config: ClipVisionConfig,
    /** Whether `image_embeds` can be computed. */
    readonly hasProjection: boolean,
  ) {}

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  /** Starts the workers and waits until each has loaded the weights. */
  static async create(options: ClipForwardPoolOptions): Promise<ClipForwardPool> {
    if (!options.model && !options.random) throw new MultimeditronError('E_CONFIG', 'ClipForwardPool needs a model folder or random weights');
    const n = Math.max(1, options.workers ?? (os.availableParallelism?.() ?? os.cpus().length));
    const script = options.workerScript ?? new URL('./internal/forward-worker.js', import.meta.url);
    const init: ForwardWorkerInit = {
      ...(options.model ? { model: options.model } : {}),
      ...(options.random ? { random: options.random } : {}),
      outputs: options.outputs ?? ['last_hidden_state', 'pooler_output', 'image_embeds'],
      ...(options.attention ? { attention: options.attention } : {}),
    };
    const started = Array.from({ length: n }, () => new Worker(script, { workerData: init }));
    const ready = await Promise.allSettled(
      started.map(
        (w) =>
          new Promise<{ config: ClipVisionConfig; hasProjection: boolean }>((resolve, reject) => {
            const onMsg = (m: { kind: string; config?: ClipVisionConfig; hasProjection?: boolean; message?: string }) => {
              if (m.kind === 'ready') resolve({ config: m.config!, hasProjection: m.hasProjection! });
              else if (m.kind === 'init-error') reject(new MultimeditronError('E_WORKER', `forward worker failed to load: ${m.message}`));
              else return;
              w.off('message', onMsg);
            };
            w.on('message', onMsg);
            w.once('error', reject);
          }),
      ),
    );
    const failed = ready.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(started.map((w) => w.terminate()));
      throw (failed as PromiseRejectedResult).reason;
    }
    const first = (ready[0] as PromiseFulfilledResult<{ config: ClipVisionConfig; hasProjection: boolean }>).value;
    return new ClipForwardPool(started.map((w) => new PoolWorker(w)), first.config, first.hasProjection);
  }

  /**
   * Runs the tower on `pixelValues` [b, channels, size, size] (a host tensor), split across the workers in
   * contiguous chunks; returns the requested outputs in input order.
   */
  async forward(pixelValues: HostTensor): Promise<PoolOutputs> {
    if (this.closed) throw new MultimeditronError('E_WORKER', 'the pool is closed');
    const shape = pixelValues.shape;
    const c = this.config;
    if (shape.length !== 4 || shape[1] !== c.numChannels || shape[2] !== c.imageSize || shape[3] !== c.imageSize) {
      throw new ShapeError(`ClipForwardPool expects pixel_values [b, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}], got [${shape}]`);
    }
    const b = shape[0]!;
    const per = shape[1]! * shape[2]! * shape[3]!;
    const src = pixelValues.data instanceof Float32Array ? pixelValues.data : Float32Array.from(pixelValues.data);
    const chunk = Math.ceil(b / this.workers.length);
    const jobs: Array<Promise<Record<string, { data: Float32Array; shape: number[] }>>> = [];
    for (let start = 0, w = 0; start < b; start += chunk, w++) {
      const rows = Math.min(chunk, b - start);
      const data = src.slice(start * per, (start + rows) * per);
      jobs.push(this.workers[w]!.run(data, [rows, ...shape.slice(1)]));
    }
    const parts = await Promise.all(jobs);
    const out: PoolOutputs = {};
    for (const name of Object.keys(parts[0]!) as PoolOutputName[]) {
      const pieces = parts.map((p) => p[name]!);
      const total = pieces.reduce((s, p) => s + p.data.length, 0);
      const data = new Float32Array(total);
      let off = 0;
      for (const p of pieces) {
        data.set(p.data, off);
        off += p.data.length;
      }
      out[name] = hostTensor(data, [b, ...pieces[0]!.shape.slice(1)]);
    }
    return out;
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
