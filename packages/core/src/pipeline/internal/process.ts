/**
 * Steps 1 and 2 for one sample (load, then process each modality entry), shared by the worker threads and
 * the in-process mode.
 * @module
 */
import type { ModalityConfigJSON } from '../../config.js';
import { MultimeditronError } from '../../errors.js';
import { ModalityLoaderPool } from '../../data/loading.js';
import type { ModalityInput } from '../../loader.js';
import type { Multimeditron } from '../../multimeditron.js';
import type { BaseModalityProcessor } from '../../processor.js';
import type { HostTensor } from '../../tensor.js';
import type { RunLoaderSpec } from '../run-config.js';
import type { RunErrorStage } from '../shards.js';

/** What the processing step needs: the modality and loader configs, and where relative sample paths start. */
export interface ProcessingSetup {
  /** Modality configs (paths resolved). */
  modalities: ModalityConfigJSON[];
  /** Loader specs (paths resolved). */
  loaders: RunLoaderSpec[];
  /** Let path values leave the dataset's folder. */
  allowOutsideBase: boolean;
}

/** One sample to load and process. */
export interface ProcessTask {
  sampleIndex: number;
  line: number;
  /** The folder the sample's paths resolve against (the dataset's folder). */
  baseDir: string;
  modalities: ModalityInput[];
}

/** One encoder input of a modality entry. */
export interface ProcessedPart {
  value: HostTensor;
  numEmbeddings: number;
}

/** A sample's failure, in a form that crosses thread boundaries. */
export interface TaskError {
  code: string;
  message: string;
  file?: string;
  stage: RunErrorStage;
}

/** The outcome of one task: per modality entry, its parts (several when one entry gives several windows). */
export type ProcessResult = { ok: true; entries: ProcessedPart[][] } | { ok: false; error: TaskError };

/** Turns anything thrown into a {@link TaskError}. */
export function toTaskError(e: unknown, stage: RunErrorStage): TaskError {
  const err = e as { code?: unknown; message?: unknown; file?: unknown };
  const code = e instanceof MultimeditronError
    ? e.code
    : typeof err?.code === 'string' ? `E_${err.code}`.replace(/^E_E_/, 'E_') : `E_${stage.toUpperCase()}`;
  return {
    code,
    message: typeof err?.message === 'string' ? err.message : String(e),
    ...(typeof err?.file === 'string' ? { file: err.file } : {}),
    stage,
  };
}

/** Loaders and processors of one thread. */
export interface ProcessingUnits {
  setup: ProcessingSetup;
  loaders: ModalityLoaderPool;
  processors: Map<string, BaseModalityProcessor>;
}

/**
 * Builds the loader pool and takes the processors from `processorFor(config)` (the main thread reuses its
 * modalities' processors; a worker builds its own, without weights).
 */
export async function buildUnits(
  mm: Multimeditron,
  setup: ProcessingSetup,
  processorFor: (config: ModalityConfigJSON) => Promise<BaseModalityProcessor>,
): Promise<ProcessingUnits> {
  const processors = new Map<string, BaseModalityProcessor>();
  for (const m of setup.modalities) processors.set(m.modalityType, await processorFor(m));
  return { setup, loaders: new ModalityLoaderPool(mm.loaders), processors };
}

/** Loads and processes every modality entry of a sample. Never throws: failures come back as a result. */
export async function processTask(units: ProcessingUnits, task: ProcessTask): Promise<ProcessResult> {
  const entries: ProcessedPart[][] = [];
  const ctx = { baseDir: task.baseDir, allowOutsideBase: units.setup.allowOutsideBase, loaders: units.setup.loaders };
  for (const [i, entry] of task.modalities.entries()) {
    const processor = units.processors.get(entry.type);
    if (!processor) {
      return {
        ok: false,
        error: {
          code: 'E_INPUT',
          message: `modality ${i} has type "${entry.type}", which no modality of the run config handles (known: ${[...units.processors.keys()].join(', ')})`,
          stage: 'load',
        },
      };
    }
    let raw: unknown;
    try {
      raw = await units.loaders.load(entry, ctx);
    } catch (e) {
      return { ok: false, error: toTaskError(e, 'load') };
    }
    try {
      const parts = processor.processAll({ ...entry, value: raw });
      if (!parts.length) throw new MultimeditronError('E_INPUT', `modality ${i} (${entry.type}): the processor returned no input`);
      entries.push(parts.map((p) => ({ value: p.value, numEmbeddings: p.numEmbeddings })));
    } catch (e) {
      return { ok: false, error: toTaskError(e, 'process') };
    }
  }
  return { ok: true, entries };
}
