/**
 * `multimeditron features <model> <files...> --out <file.safetensors>`: runs loader, processor and encoder on
 * files (or on stored encoder inputs) and writes, for input i, `i.<input name>` (e.g. `i.pixel_values`,
 * `i.input_features`) and every raw encoder output the modality exposes (`i.last_hidden_state`,
 * `i.pooler_output`, ...), and with `--embeddings` the modality's output `i.embeddings`. `<model>` is an encoder
 * checkpoint (a folder or hub id whose config.json `model_type` a plugin claims) or a modality folder written by
 * `savePretrained` (its config.json names the modality). The safetensors metadata holds the input names.
 * @module
 */
import path from 'node:path';
import type { Command } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import {
  InputError, MultimeditronError, readJsonFile, SafetensorsCheckpoint, writeSafetensors, type BaseModality,
  type HostTensor, type ModalityRegistration, type Multimeditron, type WritableTensor,
} from '@multimeditron/core';
import { createHost, type HostOptions } from '../host.js';
import { CliExit, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from '../errors.js';

/** Options of the features command. */
export interface FeaturesOptions extends HostOptions {
  out: string;
  modality?: string;
  fromTensors?: string;
  config?: string;
  batchSize?: string;
  embeddings?: boolean;
  json?: boolean;
}

/** Format tag written in the metadata. */
export const FEATURES_FORMAT = 'multimeditron-features/1';

/** A model folder's config.json: `modelType` for a saved modality (savePretrained), `model_type` for HF checkpoints. */
interface ModelFolderConfig {
  modelType?: unknown;
  model_type?: unknown;
}

/** The registered `modelType` named by a folder's config.json when it is a saved modality (savePretrained). */
function savedModalityType(mm: Multimeditron, cfg: ModelFolderConfig): string | undefined {
  return typeof cfg.modelType === 'string' && mm.modalityRegistry.has(cfg.modelType) ? cfg.modelType : undefined;
}

/** Picks the registered modality for a model folder from its config.json `model_type`. */
export function modalityForModel(mm: Multimeditron, modelDir: string, cfg: ModelFolderConfig, explicit?: string): ModalityRegistration {
  if (explicit) return mm.modalityRegistry.get(explicit);
  const type = typeof cfg.model_type === 'string' ? cfg.model_type : undefined;
  const matches = mm.modalityRegistry.all().filter((r) => type !== undefined && r.encoderModelTypes.includes(type));
  if (matches.length !== 1) {
    throw new CliExit(
      EXIT_USAGE,
      `cannot tell which modality handles ${modelDir} (model_type ${JSON.stringify(type)}; ` +
        `candidates: ${mm.modalityRegistry.all().map((r) => `${r.name} [${r.encoderModelTypes.join(', ')}]`).join('; ') || 'none'}). ` +
        'Pass --modality <name>.',
    );
  }
  return matches[0]!;
}

function stackParts(parts: HostTensor[]): HostTensor {
  if (parts.length === 1) return parts[0]!;
  const size = parts[0]!.data.length;
  const data = new Float32Array(size * parts.length);
  parts.forEach((p, i) => data.set(p.data, i * size));
  return { data, shape: [parts.length, ...parts[0]!.shape] };
}

/** Encodes one chunk of same-shaped parts; throws if the encoder rejects them. */
function encodeChunk(modality: BaseModality, xs: HostTensor[]): Array<Record<string, HostTensor>> {
  // tidy returns the tensors (not typed arrays: tidy would walk every element looking for tensors)
  const feats = tf.tidy(() => modality.encodeFeatures(tf.stack(xs.map((x) => tf.tensor(x.data as Float32Array, x.shape, 'float32')))));
  const outs: Record<string, { data: Float32Array; shape: number[] }> = {};
  try {
    for (const [k, t] of Object.entries(feats)) outs[k] = { data: t.dataSync() as Float32Array, shape: [...t.shape] };
  } finally {
    tf.dispose(Object.values(feats));
  }
  return xs.map((_, j) => {
    const rec: Record<string, HostTensor> = {};
    for (const [k, v] of Object.entries(outs)) {
      const per = v.data.length / v.shape[0]!;
      rec[k] = { data: v.data.slice(j * per, (j + 1) * per), shape: v.shape.slice(1) };
    }
    return rec;
  });
}

/** One input's encoder outputs, or why it failed. */
type Encoded = { ok: true; outputs: Record<string, HostTensor> } | { ok: false; error: unknown };

/**
 * Runs the encoder on inputs in chunks of `batchSize` and returns per-input host outputs. When a chunk fails
 * (an input of the wrong shape, say), its parts are retried one by one, so one bad input fails alone.
 */
function encodeAll(modality: BaseModality, inputs: HostTensor[][], batchSize: number): Encoded[] {
  // Flatten parts (e.g. 30 s windows) so they batch together, then regroup by input.
  const flat: Array<{ input: number; x: HostTensor }> = [];
  inputs.forEach((parts, i) => parts.forEach((x) => flat.push({ input: i, x })));
  const perPart: Encoded[] = [];
  for (let s = 0; s < flat.length; s += batchSize) {
    const chunk = flat.slice(s, s + batchSize);
    try {
      perPart.push(...encodeChunk(modality, chunk.map((c) => c.x)).map((outputs): Encoded => ({ ok: true, outputs })));
    } catch {
      for (const c of chunk) {
        try {
          perPart.push({ ok: true, outputs: encodeChunk(modality, [c.x])[0]! });
        } catch (error) {
          perPart.push({ ok: false, error });
        }
      }
    }
  }
  const grouped = new Map<number, Encoded[]>();
  flat.forEach((f, idx) => grouped.set(f.input, [...(grouped.get(f.input) ?? []), perPart[idx]!]));
  return inputs.map((_, i): Encoded => {
    const parts = grouped.get(i) ?? [];
    const failed = parts.find((p) => !p.ok);
    if (failed) return failed;
    const ok = parts.map((p) => (p as { outputs: Record<string, HostTensor> }).outputs);
    const outputs: Record<string, HostTensor> = {};
    for (const k of Object.keys(ok[0] ?? {})) outputs[k] = stackParts(ok.map((r) => r[k]!));
    return { ok: true, outputs };
  });
}

/** The modality's output for one input (encoder + projector): its parts' rows concatenated, [rows, hiddenSize]. */
function embed(modality: BaseModality, parts: HostTensor[]): HostTensor {
  const t = modality.forward(parts);
  try {
    const [n, rows, hidden] = t.shape;
    return { data: t.dataSync() as Float32Array, shape: [n * rows, hidden] };
  } finally {
    t.dispose();
  }
}

/** The command's implementation, callable from code. Returns the exit code. */
export async function runFeatures(model: string, names: string[], opts: FeaturesOptions): Promise<number> {
  const { mm } = await createHost(opts);
  const modelDir = await mm.resolver.resolve(model);
  const extra = opts.config ? ((await readJsonFile(opts.config)) as Record<string, unknown>) : {};
  const folderConfig = (await readJsonFile(path.join(modelDir, 'config.json'))) as ModelFolderConfig;
  const saved = savedModalityType(mm, folderConfig);
  let reg: ModalityRegistration;
  let modality: BaseModality;
  if (saved && !opts.modality) {
    // a modality folder written by savePretrained: its config.json names the modality
    reg = mm.modalityRegistry.get(saved);
    modality = await mm.modalities.fromPretrained(modelDir, extra);
  } else {
    reg = modalityForModel(mm, modelDir, folderConfig, opts.modality);
    if (!reg.encoderKey) {
      throw new CliExit(EXIT_USAGE, `modality ${reg.name} declares no encoderKey, so it cannot be built from the encoder checkpoint ${model}; ` +
        'pass a folder written by savePretrained() instead');
    }
    modality = await mm.modalities.fromConfig({ modelType: reg.name, ...extra, [reg.encoderKey]: modelDir });
  }
  try {
    const inputName = modality.processor.inputName;
    const batchSize = opts.batchSize ? Number(opts.batchSize) : modality.config.maxBatchSize;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new CliExit(EXIT_USAGE, `--batch-size must be a positive integer`);

    const inputs: HostTensor[][] = [];
    const labels: string[] = [];
    const okIndex: number[] = [];
    const errors: Record<string, { code: string; message: string }> = {};
    if (opts.fromTensors) {
      const ck = await SafetensorsCheckpoint.open(opts.fromTensors);
      try {
        const keys = names.length ? names : ck.keys().filter((k) => k.endsWith(`.${inputName}`)).sort();
        if (!keys.length) throw new CliExit(EXIT_USAGE, `${opts.fromTensors} has no tensors named *.${inputName}`);
        for (const [i, k] of keys.entries()) {
          labels.push(k);
          try {
            const t = await ck.read(k);
            if (!(t.data instanceof Float32Array)) throw new MultimeditronError('E_INPUT', `${opts.fromTensors}: ${k} is not a float tensor`);
            inputs.push([{ data: t.data, shape: t.shape }]);
            okIndex.push(i);
          } catch (e) {
            errors[String(i)] = { code: (e as MultimeditronError).code ?? 'E_INPUT', message: (e as Error).message };
          }
        }
      } finally {
        await ck.close();
      }
    } else {
      if (!names.length) throw new CliExit(EXIT_USAGE, 'no input files given');
      const loaderName = mm.loaders.forModalityType(reg.modalityType).find((n) => n.startsWith('fs-'));
      if (!loaderName) throw new CliExit(EXIT_USAGE, `no fs-* loader registered for modality type ${reg.modalityType}`);
      const loader = mm.loaders.create(loaderName, { basePath: process.cwd(), allowOutsideBase: true });
      for (const [i, file] of names.entries()) {
        labels.push(file);
        try {
          const raw = await loader.load({ type: reg.modalityType, value: file });
          const parts = modality.processor.processAll({ type: reg.modalityType, value: raw });
          inputs.push(parts.map((p) => p.value));
          okIndex.push(i);
        } catch (e) {
          errors[String(i)] = { code: (e as MultimeditronError).code ?? 'E_INPUT', message: (e as Error).message };
          process.stderr.write(`error: ${(e as Error).message}\n`);
        }
      }
    }

    const tensors = new Map<string, WritableTensor>();
    const encoded = inputs.length ? encodeAll(modality, inputs, batchSize) : [];
    const fail = (i: number, e: unknown) => {
      const err = e instanceof MultimeditronError ? e : new InputError(labels[i]!, (e as Error)?.message ?? String(e), { cause: e });
      errors[String(i)] = { code: err.code, message: err.message.startsWith(labels[i]!) ? err.message : `${labels[i]}: ${err.message}` };
      process.stderr.write(`error: ${errors[String(i)]!.message}\n`);
    };
    encoded.forEach((enc, j) => {
      const i = okIndex[j]!;
      if (!enc.ok) return fail(i, enc.error);
      let embedded: HostTensor | undefined;
      if (opts.embeddings) {
        try {
          embedded = embed(modality, inputs[j]!);
        } catch (e) {
          return fail(i, e);
        }
      }
      tensors.set(`${i}.${inputName}`, stackParts(inputs[j]!));
      for (const [k, v] of Object.entries(enc.outputs)) tensors.set(`${i}.${k}`, v);
      if (embedded) tensors.set(`${i}.embeddings`, embedded);
    });
    await writeSafetensors(path.resolve(opts.out), tensors, {
      format: FEATURES_FORMAT,
      model,
      modality: reg.name,
      input_name: inputName,
      files: JSON.stringify(labels),
      errors: JSON.stringify(errors),
    });
    const failed = Object.keys(errors).length;
    const written = labels.length - failed;
    const summary = { out: path.resolve(opts.out), modality: reg.name, inputs: labels.length, ok: written, failed, errors };
    if (opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else process.stdout.write(`wrote ${written} of ${labels.length} inputs to ${summary.out}${failed ? ` (${failed} failed)` : ''}\n`);
    return failed ? EXIT_FAILURES : EXIT_OK;
  } finally {
    modality.dispose();
  }
}

export function registerFeatures(program: Command): void {
  program
    .command('features <model> [inputs...]')
    .description('run loader, processor and encoder on files and write the encoder inputs and outputs to a safetensors file')
    .requiredOption('-o, --out <file>', 'output .safetensors file')
    .option('--modality <name>', 'registered modality (default: chosen from the model config.json model_type)')
    .option('--from-tensors <file>', 'feed stored encoder inputs from this safetensors file; inputs are its keys (default: every *.<input name> key)')
    .option('--config <file>', 'extra modality config fields (JSON), e.g. {"hiddenSize": 4096}')
    .option('--batch-size <n>', 'encoder batch size (default: the config maxBatchSize)')
    .option('--embeddings', 'also write i.embeddings: the modality output (encoder + projector), [numEmbeddings, hiddenSize]')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: discovered)')
    .option('--backend <name>', 'tensorflow | wasm | cpu')
    .option('--json', 'print a JSON summary')
    .action(async (model: string, inputs: string[], opts: FeaturesOptions) => {
      process.exitCode = await runFeatures(model, inputs, opts);
    });
}
