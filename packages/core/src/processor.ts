/**
 * Step 2 of the pipeline: a processor turns a raw modality into the encoder's input (a host tensor) and
 * says how many token slots its embedding will take. Processors are model-specific and run on the CPU.
 * @module
 */
import type { BaseModalityConfig } from './config.js';
import type { ModalityContext } from './context.js';
import type { ModalityInput } from './loader.js';
import type { HostTensor } from './tensor.js';

/** The output of a processor for one modality entry. */
export interface ProcessedModality {
  /** The modality type, copied from the input. */
  type: string;
  /** The encoder input for one example, without batch dimension (e.g. `pixel_values` [3, 224, 224]). */
  value: HostTensor;
  /** How many embedding rows (token slots) the modality produces for this example. */
  numEmbeddings: number;
}

/** Constructor type of a processor class. */
export interface ProcessorClass<P extends BaseModalityProcessor = BaseModalityProcessor> {
  new (config: any): P; // eslint-disable-line @typescript-eslint/no-explicit-any
  readonly name: string;
}

/**
 * Base class of processors. `init` runs once before use (read `preprocessor_config.json`, build filter banks);
 * `process` then runs per modality entry and must not touch the tfjs backend, so it can run in a worker.
 */
export abstract class BaseModalityProcessor<Raw = unknown, C extends BaseModalityConfig = BaseModalityConfig> {
  /** Name of the encoder input this processor produces (`pixel_values`, `input_features`, ...). */
  readonly inputName: string = 'input';

  constructor(readonly config: C) {}

  /** One-time asynchronous set-up. The default does nothing. */
  async init(_ctx: ModalityContext): Promise<void> {}

  /**
   * Processes one loaded modality. Returns one {@link ProcessedModality}, or several when one entry becomes
   * several consecutive encoder inputs (e.g. a long recording split into 30 s windows); their embeddings are
   * then concatenated in order for the entry's placeholder.
   */
  abstract process(modality: ModalityInput<Raw>): ProcessedModality | ProcessedModality[];

  /** {@link process}, always as an array. */
  processAll(modality: ModalityInput<Raw>): ProcessedModality[] {
    const out = this.process(modality);
    return Array.isArray(out) ? out : [out];
  }
}
