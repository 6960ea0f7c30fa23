/**
 * Where steps 1 and 2 run: a pool of worker threads, or the main thread.
 *
 * A worker that dies (native crash, `process.exit`, out of memory) takes its in-flight samples with it: each is
 * sent again once, alone on a fresh worker, and a sample that kills a worker while alone is reported as failed
 * (`E_WORKER`). The dead worker is replaced; the run goes on.
 * @module
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ModalityConfigJSON } from '../../config.js';
import { MultimeditronError } from '../../errors.js';
import type { RunLoaderSpec } from '../run-config.js';
import { processTask, type ProcessResult, type ProcessTask, type ProcessingUnits, type TaskError } from './process.js';

/** What a worker receives as `workerData`. */
export interface WorkerInit {
  /** Plugin specifiers (absolute package folders or names resolvable from `hostRoot`). */
  plugins: string[];
  hostRoot: string;
  modalities: ModalityConfigJSON[];
  loaders: RunLoaderSpec[];
  allowOutsideBase: boolean;
}

/** Main thread -> worker. */
export interface WorkerRequest {
  id: number;
  task: ProcessTask;
}

/** Worker -> main thread. */
export type WorkerReply =
  | { type: 'ready' }
  | { type: 'init-error'; error: TaskError }
  | { type: 'result'; id: number; result: ProcessResult };

/** Something that loads and processes samples. */
export interface SampleProcessor {
  /** Loads and processes one sample; never rejects for a per-sample failure. */
  process(task: ProcessTask): Promise<ProcessResult>;
  /** How many tasks it can usefully hold at once (the run keeps that many in flight). */
  readonly concurrency: number;
  close(): Promise<void>;
}

/** Runs the tasks on the main thread. */
export class InProcessProcessor implements SampleProcessor {
  readonly concurrency = 2;
  constructor(private readonly units: ProcessingUnits) {}
  process(task: ProcessTask): Promise<ProcessResult> {
    return processTask(this.units, task);
  }
  async close(): Promise<void> {}
}

/**
 * The worker script: `dist/pipeline/internal/worker.js` next to this module. When this module runs from the
 * TypeScript sources (tests), the built file under `dist/` is used.
 */
export function defaultWorkerScript(): string {
  const here = fileURLToPath(import.meta.url);
  const js = here.replace(/pool\.(ts|js)$/, 'worker.js');
  if (here.endsWith('.ts')) return js.replace(/([\\/])src([\\/]pipeline[\\/]internal[\\/]worker\.js)$/, '$1dist$2');
  return js;
}

interface Pending {
  id: number;
  task: ProcessTask;
  resolve: (r: ProcessResult) => void;
  /** Sent again after a crash: runs alone on a worker. */
  solo: boolean;
  crashes: number;
  timer?: NodeJS.Timeout;
}

interface Slot {
  worker: Worker;
  inflight: Map<number, Pending>;
  ready: boolean;
  dead: boolean;
  lastError?: string;
}

/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** Number of worker threads (>= 1). */
  size: number;
  init: WorkerInit;
  /** Path of the worker script (default {@link defaultWorkerScript}). */
  script?: string;
  /** Tasks in flight per worker (default 2: one running, one queued in its port). */
  perWorker?: number;
  /** A task running longer than this (ms) is treated as a crash of its worker (terminated, replaced). 0 = no limit. */
  taskTimeoutMs?: number;
}

/** A pool of worker threads, each with its own instance, loaders and processors. */
export class WorkerPool implements SampleProcessor {
  readonly concurrency: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 0;
  private closing = false;
  private fatal: MultimeditronError | undefined;
  private readonly script: string;
  private readonly perWorker: number;
  /** Workers that died and were replaced. */
  crashes = 0;

  private constructor(private readonly options: WorkerPoolOptions) {
    this.script = options.script ?? defaultWorkerScript();
    this.perWorker = options.perWorker ?? 2;
    this.concurrency = options.size * this.perWorker;
  }

  /** Starts `size` workers and waits until each has built its instance. Throws if one cannot. */
  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(options);
    if (!existsSync(pool.script)) {
      throw new MultimeditronError('E_WORKER', `the worker script ${pool.script} does not exist`, {
        suggestions: ['Build core first (npx tsc -b packages/core), or run with workers: 0.'],
      });
    }
    try {
      await Promise.all(Array.from({ length: options.size }, () => pool.spawn()));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  private spawn(): Promise<void> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(this.script, { workerData: this.options.init, stdout: false, stderr: false });
      const slot: Slot = { worker, inflight: new Map(), ready: false, dead: false };
      this.slots.push(slot);
      worker.on('message', (msg: WorkerReply) => {
        if (msg.type === 'ready') {
          slot.ready = true;
          resolve();
          this.pump();
        } else if (msg.type === 'init-error') {
          const err = new MultimeditronError(msg.error.code === 'E_WORKER' ? 'E_WORKER' : msg.error.code, `worker failed to start: ${msg.error.message}`);
          this.fatal = err;
          reject(err);
          void worker.terminate();
        } else {
          const p = slot.inflight.get(msg.id);
          if (!p) return;
          clearTimeout(p.timer);
          slot.inflight.delete(msg.id);
          p.resolve(msg.result);
          this.pump();
        }
      });
      worker.on('error', (e) => {
        slot.lastError = e?.message ?? String(e);
      });
      worker.on('exit', (code) => {
        slot.dead = true;
        this.slots.splice(this.slots.indexOf(slot), 1);
        if (!slot.ready) {
          reject(this.fatal ?? new MultimeditronError('E_WORKER', `worker exited with code ${code} before it was ready${slot.lastError ? `: ${slot.lastError}` : ''}`));
        }
        this.onExit(slot, code);
      });
    });
  }

  private onExit(slot: Slot, code: number): void {
    const lost = [...slot.inflight.values()];
    for (const p of lost) clearTimeout(p.timer);
    slot.inflight.clear();
    if (this.closing) {
      for (const p of lost) p.resolve({ ok: false, error: { code: 'E_WORKER', message: 'the run was stopped', stage: 'worker' } });
      return;
    }
    if (!slot.ready) {
      // a worker that cannot start is fatal for the run: fail what waits
      this.fatal ??= new MultimeditronError('E_WORKER', `a replacement worker failed to start${slot.lastError ? `: ${slot.lastError}` : ''}`);
      for (const p of [...lost, ...this.queue.splice(0)]) {
        p.resolve({ ok: false, error: { code: 'E_WORKER', message: this.fatal.message, stage: 'worker' } });
      }
      return;
    }
    this.crashes++;
    const why = `the worker thread died (exit code ${code}${slot.lastError ? `: ${slot.lastError}` : ''})`;
    const retry: Pending[] = [];
    for (const p of lost) {
      p.crashes++;
      if (p.solo) {
        p.resolve({ ok: false, error: { code: 'E_WORKER', message: `${why} while processing this sample alone`, stage: 'worker' } });
      } else {
        p.solo = true;
        retry.push(p);
      }
    }
    this.queue.unshift(...retry);
    this.spawn().catch(() => undefined);
  }

  /** Sends queued tasks to workers with room; solo tasks only to idle workers, and alone. */
  private pump(): void {
    while (this.queue.length) {
      const next = this.queue[0]!;
      const slot = next.solo
        ? this.slots.find((s) => s.ready && !s.dead && s.inflight.size === 0)
        : this.slots
          .filter((s) => s.ready && !s.dead && s.inflight.size < this.perWorker && ![...s.inflight.values()].some((p) => p.solo))
          .sort((a, b) => a.inflight.size - b.inflight.size)[0];
      if (!slot) return;
      this.queue.shift();
      slot.inflight.set(next.id, next);
      const limit = this.options.taskTimeoutMs ?? 0;
      if (limit > 0) {
        // time from dispatch: a queued task waits behind at most perWorker - 1 others
        const ms = next.solo ? limit : limit * this.perWorker;
        next.timer = setTimeout(() => {
          slot.lastError = `a sample took longer than ${ms} ms`;
          void slot.worker.terminate();
        }, ms);
        next.timer.unref();
      }
      slot.worker.postMessage({ id: next.id, task: next.task } satisfies WorkerRequest);
    }
  }

  process(task: ProcessTask): Promise<ProcessResult> {
    if (this.fatal) return Promise.reject(this.fatal);
    return new Promise((resolve) => {
      this.queue.push({ id: this.nextId++, task, resolve, solo: false, crashes: 0 });
      this.pump();
    });
  }

  /** The error that made the pool unusable (a worker that could not start), if any. */
  get failure(): MultimeditronError | undefined {
    return this.fatal;
  }

  /** Terminates every worker; tasks still in flight resolve as failed. */
  async close(): Promise<void> {
    this.closing = true;
    for (const p of this.queue.splice(0)) {
      p.resolve({ ok: false, error: { code: 'E_WORKER', message: 'the run was stopped', stage: 'worker' } });
    }
    await Promise.all([...this.slots].map((s) => s.worker.terminate()));
  }
}
